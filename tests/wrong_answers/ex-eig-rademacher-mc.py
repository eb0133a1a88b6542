# The square root taken after averaging: sqrt(E eps^T H eps) / n is the Jensen bound itself, not E sqrt(...) / n.
def rademacher_estimate(H, n_signs, seed):
    n = H.shape[0]
    eps = torch.randint(0, 2, (n_signs, n), generator=torch.Generator().manual_seed(seed)).to(H) * 2 - 1
    quad = torch.einsum("si,ij,sj->s", eps, H, eps)
    mean = float(quad.mean())
    return math.sqrt(mean) / n, float(quad.std()) / math.sqrt(n_signs) / (2 * math.sqrt(mean) * n)
