# The moments of random signs (E[a^2] = E[a^4] = 1) instead of those of Unif[-1, 1] (1/3 and 1/5).
def entry_variance(x, m):
    g = (x @ x.T).clamp(-1.0, 1.0)
    p = (math.pi - torch.arccos(g)) / (2 * math.pi)
    return g**2 * (p - p**2) / m
