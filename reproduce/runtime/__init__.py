"""Run-time plumbing shared by the runners: atomic files, config hashing, logging set-up."""
