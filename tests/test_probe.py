"""One clock and one memory probe for inference jobs and the benchmark (`lcopt.probe`)."""

import mmap
import time

import pytest
import torch

from lcopt import probe as probe_module
from lcopt.probe import MemoryProbe, TokenClock


def test_the_clock_stamps_each_token_as_a_callback_and_as_generates_streamer():
    first = []
    engine_clock = TokenClock(on_first=lambda: first.append(len(engine_clock.stamps)))
    for _ in range(6):
        time.sleep(0.002)
        engine_clock()
    streamer = TokenClock()
    streamer.put(torch.tensor([[1, 2, 3]]))  # generate puts the prompt first: no stamp
    for token in range(6):
        time.sleep(0.002)
        streamer.put(torch.tensor([token]))
    streamer.end()
    for clock in (engine_clock, streamer):
        clock.stop()
        assert len(clock.stamps) == 6
        r = clock.readings()
        assert 0 < r["ttft_s"] < r["e2e_s"] and r["tpot_s"] >= 0.002 and r["tpot_median_s"] >= 0.002
        assert r["decode_tokens_per_s"] == pytest.approx(5 / (clock.stamps[-1] - clock.stamps[0]))
        assert clock.readings(skip=4)["tpot_s"] == pytest.approx(clock.stamps[-1] - clock.stamps[-2])
    assert first == [1]  # called once, at the first token


def test_the_memory_probe_reads_the_processs_peak_on_a_cpu():
    probe = MemoryProbe([torch.device("cpu")])
    probe.start()
    # 64 MiB of fresh pages, touched: an anonymous mapping, not the allocator's (after other tests in the same
    # process, a torch tensor of that size may reuse pages that are already resident, and RSS does not rise)
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"\x01" * len(block))
    time.sleep(0.05)
    reading = probe.read()
    block.close()
    assert reading["peak_mem_above_start_bytes"] >= 48 * 2**20
    assert reading["peak_mem_bytes"] >= reading["peak_mem_above_start_bytes"]
    assert probe.decode_energy_j() is None  # no NVML on a CPU


@pytest.mark.parametrize("kernel_peak", [True, False])
def test_a_cpu_sample_s_peak_memory_includes_a_brief_allocation(monkeypatch, kernel_peak):
    """The peak RSS of a sample: on Linux the kernel's own (VmHWM, reset at the sample's start), which sees
    an allocation however briefly it lived; elsewhere a thread that samples the RSS every millisecond. The
    prefill's peak (read at the first token) sees what was allocated before it, not what comes after."""
    if not kernel_peak:
        monkeypatch.setattr(probe_module, "_reset_peak_rss", lambda: False)
    probe = MemoryProbe([torch.device("cpu")])
    probe.start()
    spike = mmap.mmap(-1, 64 * 2**20)  # fresh pages, touched, then given back
    spike.write(b"\x01" * len(spike))
    if not kernel_peak:
        time.sleep(0.3)  # the sampler needs the allocation to outlive a few of its reads (on a busy machine too)
    spike.close()
    probe.mark_decode()
    reading = probe.read()
    assert reading["peak_mem_above_start_bytes"] >= 60 * 2**20, reading
    assert reading["prefill_peak_mem_bytes"] >= probe.start_bytes + 60 * 2**20, reading
    assert reading["mem_after_prefill_bytes"] < reading["prefill_peak_mem_bytes"] - 32 * 2**20, reading
    assert ("VmHWM" in reading["mem_source"]) == kernel_peak
