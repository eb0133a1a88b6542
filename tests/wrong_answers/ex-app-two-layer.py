# The derivative kernel of ReLU without the readout's sigma_w^2 = 2: (pi - theta) / (2 pi) instead of (pi - theta) / pi.
def fc1_ntk(x1, x2):
    d = x1.shape[1]
    n1, n2 = x1.norm(dim=1)[:, None], x2.norm(dim=1)[None, :]
    cos = ((x1 @ x2.T) / (n1 * n2)).clamp(-1, 1)
    angle = torch.arccos(cos)
    k1 = 2 * x1 @ x2.T / d
    k2 = 2 * n1 * n2 / d * (torch.sin(angle) + (math.pi - angle) * cos) / math.pi
    return k2 + k1 * (math.pi - angle) / (2 * math.pi)
