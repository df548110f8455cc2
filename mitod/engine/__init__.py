"""The engine: queue, scheduler, executor and monitor threads."""
