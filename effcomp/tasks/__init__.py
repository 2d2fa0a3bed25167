"""Tasks (what to optimize and how to evaluate), registered in `effcomp.registry.TASKS`.

Importing a task module registers it; `effcomp.runs.build` imports them all, where the
registry is read (the trainer never does: it runs the `Task` it is given).
"""
