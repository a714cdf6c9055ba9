"""Integrations with other libraries (imported on demand, so fastdiff itself does not need them).

- `fastdiff.integrations.diffusers`: drop-in diffusers schedulers whose `step()` is one fused call
  (`fast_scheduler(pipe.scheduler)`).
"""
