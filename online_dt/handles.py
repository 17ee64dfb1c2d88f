"""Call the loop's workers the same way in process and on Ray.

The controller's loop calls methods on *handles* and gets *futures* back (anything with
``result()``). :class:`LocalHandle` runs the call at once (tests, single process);
``actors.RayHandle`` submits it to a Ray actor. :class:`SamplerGroup` fans one rollout request
out over several sampler replicas and gathers the results, like OpenRLHF's ``RayActorGroup``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from online_dt.sampling import Rollout, SamplingParams

T = TypeVar("T", covariant=True)


class Future(Protocol[T]):
    """A pending result."""

    def result(self) -> T:
        """Block until the call finished; return its value or raise its exception."""
        ...


class Done:
    """An already finished call (holds a value or an exception)."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    def result(self) -> Any:
        """Return the value, or raise the call's exception."""
        if self._error is not None:
            raise self._error
        return self._value


class Gather:
    """Results of several futures combined by ``combine`` (default: a list of them)."""

    def __init__(
        self, futures: Sequence[Any], combine: Callable[[list[Any]], Any] | None = None
    ) -> None:
        self.futures = list(futures)
        self.combine = combine or (lambda values: values)

    def result(self) -> Any:
        """Wait for every future, then combine their values."""
        return self.combine([f.result() for f in self.futures])


class LocalHandle:
    """Wraps an object so each method call returns a :class:`Done` future."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Callable[..., Done]:
        method = getattr(self.target, name)

        def call(*args: Any, **kwargs: Any) -> Done:
            try:
                return Done(method(*args, **kwargs))
            except Exception as e:  # surfaced by result(), as a remote call would
                return Done(error=e)

        return call


class SamplerGroup:
    """Fans rollouts out over sampler replicas (handles whose calls return futures).

    A request of P prompts is split into contiguous chunks, one per replica; results come back
    in prompt order with ``prompt_index`` relative to the whole request.
    """

    def __init__(self, handles: Sequence[Any]) -> None:
        if not handles:
            raise ValueError("a sampler group needs at least one sampler")
        self.handles = list(handles)

    def generate(
        self, prompts: Sequence[str], targets: Sequence[float], params: SamplingParams
    ) -> Gather:
        """Submit to every replica; the future's result is the concatenated rollouts."""
        n = len(self.handles)
        size = -(-len(prompts) // n)
        futures, offsets = [], []
        for k, handle in enumerate(self.handles):
            lo, hi = k * size, min((k + 1) * size, len(prompts))
            if lo >= hi:
                continue
            seed = None if params.seed is None else params.seed + 1_000_003 * k
            chunk_params = SamplingParams(
                params.n, params.temperature, params.top_p, params.max_new_tokens, seed
            )
            futures.append(handle.generate(prompts[lo:hi], targets[lo:hi], chunk_params))
            offsets.append(lo)

        def combine(chunks: list[list[Rollout]]) -> list[Rollout]:
            out = []
            for offset, chunk in zip(offsets, chunks, strict=True):
                for r in chunk:
                    r.prompt_index += offset
                    out.append(r)
            return out

        return Gather(futures, combine)

    def load_weights(self, update: Any) -> Gather:
        """Apply a weight update on every replica."""
        return Gather([h.load_weights(update) for h in self.handles])
