"""Top-k accuracy of a batch of logits."""

__all__ = ["compute_accuracy"]


def compute_accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent.

    Args:
        output (Tensor or tuple): logits ``[B, C]`` (if a tuple/list, its first element).
        target (Tensor): labels ``[B]``.
        topk (tuple of int): the k values.

    Returns:
        list of Tensor: one ``[1]``-shaped tensor per k (use ``[0].item()`` for a float).
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() != 2 or target.dim() != 1 or output.size(0) != target.size(0):
        raise ValueError(
            f"compute_accuracy() expects logits [B, C] and labels [B]; got {tuple(output.shape)} "
            f"and {tuple(target.shape)}"
        )
    maxk = max(topk)
    if maxk > output.size(1):
        raise ValueError(f"topk={topk} asks for k={maxk} but there are only {output.size(1)} classes")
    batch_size = target.size(0)
    _, pred = output.topk(maxk, dim=1, largest=True, sorted=True)  # [B, maxk]
    correct = pred.t().eq(target.view(1, -1))  # [maxk, B]
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / batch_size) for k in topk]
