"""The engine's parts, built once and wired together: what ``BlockPoolBatchEngine`` is made of.

The slab under the pool, MLX's cache limit, the spill folder and files, residency, the prefix
cache, the hot set, the agents' contexts, the scheduler, the runner and the step loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool import BlockPool, ModelCacheSpec
from telemetry import Recorder

from .cache_limit import CacheLimit, default_hot_bytes
from .contexts import Contexts
from .kv.block_writer import BlockWriter
from .kv.hot_set import HotSet
from .kv.kv_store import KVBlockStore
from .kv.residency import Residency
from .kv.spill import SpillStore
from .kv.spill_folders import open_spill_folder
from .prefix_cache import PrefixCache
from .runner import ModelRunner
from .scheduler import Scheduler
from .step_loop import StepLoop


@dataclass
class EngineParts:
    store: KVBlockStore
    cache_limit: CacheLimit
    scheduler: Scheduler
    contexts: Contexts
    loop: StepLoop
    temp_spill: bool  # a private temp folder: nothing is saved at close
    remove_temp: Callable[[], None] | None

    def shut_down(self) -> dict[str, str]:
        """Finish what the last step left, save resident contexts (not into a temp folder),
        remove a temp folder and restore MLX's cache limit; agent id -> error for the unsaved."""
        self.loop.finish_ended()
        self.loop.apply_commands()
        resident = [a for a in self.contexts.agents.values() if a.num_blocks()]
        errors = {} if self.temp_spill else self.contexts.residency.save_all(resident)
        if self.remove_temp is not None:
            self.remove_temp()
        self.cache_limit.restore()
        return errors


@dataclass(frozen=True)
class PartsConfig:
    max_batch_size: int
    prefill_step_size: int
    spill_dir: str | Path | None
    spill_budget_bytes: int | None
    prefix_cache: bool
    hot_cache_bytes: int | None


def assemble(owner: object, model: Any, tokenizer: Any, pool: BlockPool, spec: ModelCacheSpec, model_key: str,
             recorder: Recorder, config: PartsConfig) -> EngineParts:
    """Every part over ``pool``; ``owner`` is what removes a temp spill folder when collected."""
    store = KVBlockStore(spec, pool.total_blocks)
    cache_limit = CacheLimit(store.float_nbytes)
    spill_folder, remove_temp = open_spill_folder(owner, config.spill_dir)
    spill = SpillStore(spill_folder, spec, model_key, config.spill_budget_bytes)
    residency = Residency(pool, store, BlockWriter(pool, store), spill, recorder)
    scheduler = Scheduler(config.max_batch_size)
    prefix = PrefixCache(pool, recorder, enabled=config.prefix_cache)
    hot_bytes = default_hot_bytes(store.float_nbytes) if config.hot_cache_bytes is None else config.hot_cache_bytes
    contexts = Contexts(pool, store, residency, prefix, recorder, running=scheduler.running_agent_ids,
                        hot=HotSet(hot_bytes))
    runner = None
    if model is not None:
        runner = ModelRunner(model, tokenizer.eos_token_ids, max_batch_size=config.max_batch_size,
                             prefill_step_size=config.prefill_step_size)
    loop = StepLoop(pool, scheduler, contexts, runner, tokenizer, recorder)
    return EngineParts(store, cache_limit, scheduler, contexts, loop, config.spill_dir is None, remove_temp)
