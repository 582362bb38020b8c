"""One `digits run`: the local runner, console lines, outcomes, summary, run lock, history and crash cleanup."""
