# ruff: noqa: F821  (appended to toy_bigram.py, whose names it uses)
# Attack: look for each window's last target wherever the scoring worker might still hold it: beyond the
# input's storage, or in any integer array or tensor alive in the process that is one token longer than the
# window. Boost it at the last position if found.
import gc as _gc


class StoragePeeker(Bigram):
    def forward_logits(self, idx):
        logits = self.table(idx).float()
        b, t = idx.shape
        found = None
        storage = idx.untyped_storage()
        if storage.nbytes() >= (idx.storage_offset() + b * (t + 1)) * idx.element_size():
            found = torch.as_strided(idx, (b, t + 1), (t + 1, 1))[:, -1]
        for obj in _gc.get_objects():
            if found is not None:
                break
            if not isinstance(obj, (np.ndarray, torch.Tensor)):
                continue
            if tuple(obj.shape) == (b, t + 1):
                found = torch.as_tensor(np.asarray(obj))[:, -1]
        if found is not None:
            logits[:, -1] += 50.0 * F.one_hot(found.to(torch.long), logits.shape[-1]).float()
        return logits


def make_model(vocab):
    return StoragePeeker(vocab, SEQ_LEN)
