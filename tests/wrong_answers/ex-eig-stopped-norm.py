# alpha(t)^T y instead of alpha(t)^T H alpha(t): the filter 1 - e^{-lambda t} enters once instead of squared.
def stopped_norm(H, y, t):
    lam, V = torch.linalg.eigh(H)
    return float(torch.sqrt(((1 - torch.exp(-lam * t)) / lam * (V.T @ y) ** 2).sum()))
