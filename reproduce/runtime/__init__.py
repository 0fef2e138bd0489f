"""Run-time plumbing shared by the runners: config hashing, locks, run directories, logging set-up."""
