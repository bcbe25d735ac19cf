"""What a generation costs, measured one way for inference jobs (`lcopt.inference`) and the benchmark
(`lcopt.decode_benchmark`): the host time of each new token (`TokenClock`), the devices' peak memory and
its rise over the memory held when the sample began, apart the prefill's peak and what it leaves, and the
decode energy from NVML (`MemoryProbe`).

Light on imports (no transformers): `generate` takes the clock as its streamer by duck typing.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from itertools import pairwise

import psutil
import torch

log = logging.getLogger(__name__)


class TokenClock:
    """Host time of each new token, from the moment the clock is made (right before the generation).

    The fast engine calls it once per token (`on_token`), each token already on the host; `generate` takes
    it as its streamer, which receives the prompt first and then each token (synchronized first on a GPU,
    so that a stamp is when the token exists). `on_first` is called at the first token: decoding starts
    there (`MemoryProbe.mark_decode`)."""

    def __init__(self, device: str | torch.device = "cpu", on_first=None):
        self.cuda = str(device).startswith("cuda")
        self.on_first = on_first
        self.stamps: list[float] = []
        self._prompt_seen = False
        self.start = time.perf_counter()
        self.stopped: float | None = None

    def __call__(self) -> None:
        self.stamps.append(time.perf_counter())
        if len(self.stamps) == 1 and self.on_first:
            self.on_first()

    def put(self, value) -> None:  # transformers' streamer protocol
        if self.cuda:
            torch.cuda.synchronize()
        if self._prompt_seen:
            self()
        self._prompt_seen = True

    def end(self) -> None:  # the streamer protocol's end of generation
        pass

    def stop(self) -> None:
        """The generation returned (its work done on the device)."""
        if self.cuda:
            torch.cuda.synchronize()
        self.stopped = time.perf_counter()

    def readings(self, skip: int = 0) -> dict:
        """Time to first token, per-token decode time (mean and median over the steps after the first
        `skip`: the benchmark's steady state), end to end, decode tokens per second."""
        end = time.perf_counter() if self.stopped is None else self.stopped
        steps = [b - a for a, b in pairwise(self.stamps)][skip:]
        return {
            "ttft_s": self.stamps[0] - self.start if self.stamps else end - self.start,
            "tpot_s": statistics.fmean(steps) if steps else None,
            "tpot_median_s": statistics.median(steps) if steps else None,
            "e2e_s": end - self.start,
            "decode_tokens_per_s": len(steps) / sum(steps) if steps else None,
        }


class MemoryProbe:
    """Per-sample peak memory of the devices a model uses, plus NVML memory and energy on NVIDIA GPUs. On a
    CPU the peak is the process's RSS: the kernel's VmHWM (reset when the sample starts) on Linux, else a
    thread's reading every millisecond."""

    def __init__(self, devices: list[torch.device]):
        self.cuda = [d for d in devices if d.type == "cuda"]
        self.nvml = []
        self.gpus = []
        if self.cuda:
            try:
                import pynvml

                pynvml.nvmlInit()
                for d in self.cuda:
                    props = torch.cuda.get_device_properties(d)
                    uuid = f"GPU-{props.uuid}"
                    self.nvml.append(pynvml.nvmlDeviceGetHandleByUUID(uuid))
                    self.gpus.append({"name": props.name, "uuid": uuid})
                self.pynvml = pynvml
            except Exception as exc:  # NVML is optional; torch's numbers remain
                log.warning("NVML unavailable: %s", exc)
                self.nvml = []
                self.gpus = [{"name": torch.cuda.get_device_properties(d).name, "uuid": None} for d in self.cuda]
        self._rss_thread = None
        self.prefill: dict = {}  # the prefill's memory readings of the sample in flight (`mark_decode`)

    def _energy_mj(self) -> int | None:
        try:
            return sum(self.pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.nvml) if self.nvml else None
        except Exception:
            return None

    def start(self) -> None:
        self.energy_start = None
        if self.cuda:
            for d in self.cuda:
                torch.cuda.reset_peak_memory_stats(d)
            self.start_bytes = sum(torch.cuda.memory_allocated(d) for d in self.cuda)
            return
        process = psutil.Process()
        self.start_bytes = self.peak = process.memory_info().rss
        if _reset_peak_rss():  # Linux: the kernel keeps the peak; no thread competes with the sample
            return
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.001):
                self.peak = max(self.peak, process.memory_info().rss)

        self._rss_thread = threading.Thread(target=sample, daemon=True)
        self._rss_thread.start()

    def mark_decode(self) -> None:
        """Called when decoding starts (after the first token): energy is counted from here, and the
        prefill's memory is read apart: its peak, and what it leaves (the cache after an eviction method
        has dropped what it does not keep)."""
        self.energy_start = self._energy_mj()
        if self.cuda:
            self.prefill = {
                "prefill_peak_mem_bytes": sum(torch.cuda.max_memory_allocated(d) for d in self.cuda),
                "mem_after_prefill_bytes": sum(torch.cuda.memory_allocated(d) for d in self.cuda),
            }
        else:
            self.prefill = {
                "prefill_peak_mem_bytes": self.peak if self._rss_thread else _peak_rss(),
                "mem_after_prefill_bytes": psutil.Process().memory_info().rss,
            }

    def read(self) -> dict:
        prefill, self.prefill = self.prefill, {}
        if self.cuda:
            peak = sum(torch.cuda.max_memory_allocated(d) for d in self.cuda)
            out = {"peak_mem_bytes": peak, "peak_mem_above_start_bytes": peak - self.start_bytes, **prefill}
            out["mem_source"] = f"torch.cuda peak allocated, {len(self.cuda)} device(s)"
            out["gpus"] = self.gpus
            if self.nvml:
                out["nvml_used_bytes"] = sum(self.pynvml.nvmlDeviceGetMemoryInfo(h).used for h in self.nvml)
            return out
        if self._rss_thread is None:
            self.peak = _peak_rss()
            source = "process peak RSS during the sample (the kernel's VmHWM, reset when the sample began)"
        else:
            self._stop.set()
            self._rss_thread.join()
            self._rss_thread = None
            self.peak = max(self.peak, psutil.Process().memory_info().rss)
            source = "process RSS during the sample (sampled every 1 ms)"
        return {
            "peak_mem_bytes": self.peak,
            "peak_mem_above_start_bytes": self.peak - self.start_bytes,
            **prefill,
            "mem_source": source,
        }

    def decode_energy_j(self) -> float | None:
        end = self._energy_mj()
        start = getattr(self, "energy_start", None)
        return None if end is None or start is None else (end - start) / 1000


def _reset_peak_rss() -> bool:
    """Reset the kernel's record of this process's peak RSS (Linux: `5` into /proc/self/clear_refs sets
    VmHWM to the current RSS); False where that is not possible. Why: the sampler thread it replaces read
    the RSS every millisecond, missed what rose and fell between reads, and competed with the sample for
    the GIL (12% of a decode-heavy job's sample time, measured: prune+kivi4 on fact_extraction-1k)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _peak_rss() > 0
    except (OSError, ValueError):
        return False


def _peak_rss() -> int:
    """This process's peak RSS in bytes since the last `_reset_peak_rss` (VmHWM of /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise ValueError("no VmHWM in /proc/self/status")
