"""dmtwin core: a pure, deterministic, event-sourced model of Hyper-V Dynamic Memory."""
