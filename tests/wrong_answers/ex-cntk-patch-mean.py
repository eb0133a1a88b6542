# The mean over the taps inside the image instead of over all nine: near the border the patch mean is divided by
# fewer than 9, which is the mean of the in-image pixels, not the zero-padded convolution the network computes.
def patch_mean(m):
    m = np.asarray(m, dtype=float)
    H, W = m.shape[-2:]
    padded = np.pad(m, [(0, 0)] * (m.ndim - 4) + [(1, 1)] * 4)
    count = np.pad(np.ones((H, W, H, W)), [(1, 1)] * 4)
    out, n = np.zeros_like(m), np.zeros((H, W, H, W))
    for di in range(3):
        for dj in range(3):
            out += padded[..., di:di + H, dj:dj + W, di:di + H, dj:dj + W]
            n += count[di:di + H, dj:dj + W, di:di + H, dj:dj + W]
    return out / np.maximum(n, 1)
