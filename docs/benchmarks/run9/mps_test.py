"""Do concurrent processes' small kernels overlap on one GPU? Each process replays a CUDA graph of 400
tiny kernels (a 135M model's decode step has ~390) from a common start time for 3 s and prints how many
replays it finished: with k processes, k x (one process's count) means full overlap, about 1x time-slicing."""
import sys, time, torch
start = float(sys.argv[2])
x = torch.randn(576, device="cuda")
s = torch.cuda.Stream()
with torch.cuda.stream(s):
    for _ in range(3):
        y = x
        for _ in range(400):
            y = y * 1.0001 + 0.0001
torch.cuda.synchronize()
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g):
    y = x
    for _ in range(400):
        y = y * 1.0001 + 0.0001
g.replay(); torch.cuda.synchronize()
while time.time() < start:
    time.sleep(0.001)
n = 0
while time.time() < start + 3.0:
    g.replay()
    torch.cuda.synchronize()
    n += 1
print(f"{sys.argv[1]}: {n} replays in 3 s ({3000 / max(n, 1):.3f} ms each)", flush=True)
