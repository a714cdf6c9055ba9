"""Saved pipelines name a Fast* scheduler's diffusers parent, so plain diffusers (without fastdiff) loads them.

A pipeline records each component as (library, class name), read from the object's module and class by
diffusers' `_fetch_class_library_tuple` when the component is set (`pipe.scheduler = ...`), and writes that
record to model_index.json. For a Fast* scheduler it would write ["fastdiff.integrations.diffusers",
"FastDDIMScheduler"], which only an environment with fastdiff can load (and diffusers' loader refuses even
there). `record_fast_schedulers_as_parents()` wraps that function so that Fast* schedulers are recorded as
their parent (["diffusers", "DDIMScheduler"]); everything else is recorded as before. The scheduler's own
config names the parent too (`FusedScheduler.to_json_string`). Loading a saved pipeline back gives the parent
class with the same config: `fast_scheduler(pipe.scheduler)` makes it fused again.

diffusers has no hook for this, so the function is replaced where it is defined and in the diffusers modules
that imported it by name; it is installed when `fastdiff.integrations.diffusers` is imported.
"""

from __future__ import annotations

import functools
import sys

from .base import FusedScheduler

_NAME = "_fetch_class_library_tuple"


def record_fast_schedulers_as_parents() -> None:
    """Make diffusers record Fast* schedulers (instances or classes) as their parents (idempotent)."""
    from diffusers.pipelines import pipeline_loading_utils

    original = getattr(pipeline_loading_utils, _NAME, None)
    if original is None or getattr(original, "records_fast_as_parent", False):
        return

    @functools.wraps(original)
    def fetch_class_library_tuple(module):
        cls = module if isinstance(module, type) else type(module)
        return original(cls._parent if issubclass(cls, FusedScheduler) else module)

    fetch_class_library_tuple.records_fast_as_parent = True
    for name, mod in list(sys.modules.items()):
        if (name == "diffusers" or name.startswith("diffusers.")) and mod.__dict__.get(_NAME) is original:
            setattr(mod, _NAME, fetch_class_library_tuple)
