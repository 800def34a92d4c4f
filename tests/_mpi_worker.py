"""One rank of the data-parallel tests (tests/test_distributed.py starts it under mpiexec).

    mpiexec -n N python tests/_mpi_worker.py checks OUT_DIR   # every check; rank r writes OUT_DIR/rank{r}.json
    mpiexec -n 2 python tests/_mpi_worker.py fail OUT_DIR     # rank 1 raises in the middle of fit

The worker only records; the test process compares the ranks' records and asserts.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

import fastrnn as fr
import fastrnn.distributed as dist
from fastrnn import callbacks, layers, optim
from fastrnn.models import Sequential


def digest(model):
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def sentiment_model(seed, vocab=50):
    fr.set_seed(seed)
    return Sequential([layers.Embedding(vocab, 8, mask_zero=True), layers.LSTM(6), layers.Dense(1, activation="sigmoid")])


def sequence_model(seed):
    fr.set_seed(seed)
    return Sequential([layers.GRU(5, return_sequences=True), layers.TimeDistributed(layers.Dense(2))])


def token_data(n, T=9, vocab=50, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, size=(n, T)).astype(np.int32)
    lengths = rng.integers(2, T + 1, size=n)
    for i, L in enumerate(lengths):
        x[i, L:] = 0  # padding at the end, masked
    y = (rng.random(n) < 0.5).astype(np.float32)
    return x, y


def rel_err(a_list, b_list):
    return max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30)) for a, b in zip(a_list, b_list))


def check_steps(comm, out):
    """train_on_batch on each rank's shard of a global batch against one model on the whole batch."""
    rank, size = dist.rank(), dist.size()
    cases = {
        "sgd": (lambda: optim.SGD(0.5), sentiment_model, "binary_crossentropy", None),
        "adam_global_clip": (lambda: optim.Adam(0.01, global_clipnorm=0.05), sentiment_model, "binary_crossentropy",
                             None),
        "rmsprop_clipnorm_tbptt": (lambda: optim.RMSprop(0.01, clipnorm=0.02), sequence_model, "mse", 4),
    }
    for name, (make_opt, make_model, loss, tbptt) in cases.items():
        for overlap in (True, False):
            model = make_model(seed=100 + rank)  # different initial weights: the first step broadcasts rank 0's
            model.compile(optimizer=dist.DistributedOptimizer(make_opt(), overlap=overlap, bucket_bytes=512),
                          loss=loss)
            ref = make_model(seed=100)
            ref.compile(optimizer=make_opt(), loss=loss)
            errs, gerrs, same = [], [], True
            for step in range(3):
                if make_model is sentiment_model:
                    x, y = token_data(4 * size + 1, seed=step)  # not a multiple of size: uneven shards
                else:
                    rng = np.random.default_rng(step)
                    x = rng.standard_normal((4 * size + 1, 10, 3)).astype(np.float32)
                    y = rng.standard_normal((4 * size + 1, 10, 2)).astype(np.float32)
                xs, ys = dist.shard(x, y)
                model.train_on_batch(xs, ys, tbptt=tbptt)
                ref.train_on_batch(x, y, tbptt=tbptt)
                digests = comm.allgather(digest(model))
                same = same and len(set(digests)) == 1
                errs.append(rel_err(model.get_weights(), ref.get_weights()))
                if step == 0:  # later steps evaluate the gradient at weights that differ by rounding
                    gerrs.append(rel_err([p.grad for p in model.parameters()], [p.grad for p in ref.parameters()]))
            out[f"step_{name}_overlap{int(overlap)}"] = {"max_rel_err": max(errs), "grad_rel_err": max(gerrs),
                                                         "identical": same,
                                                         "digest": digest(model), "shard": len(xs)}


class Recorder(callbacks.Callback):
    """Records weight digests after each batch and each epoch, and the rank's local validation figures."""

    def __init__(self, val):
        super().__init__()
        self.val = val
        self.batches, self.epochs, self.local_val = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append([len(self.epochs), batch, digest(self.model)])

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(digest(self.model))
        self.local_val.append(self.model.evaluate(*self.val, batch_size=8, verbose=0, return_dict=True))


class StopOnRank(callbacks.Callback):
    def __init__(self, rank, epoch, batch):
        super().__init__()
        self.at = (rank, epoch, batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (dist.rank(), self.epoch, batch) == self.at:
            self.model.stop_training = True


def check_fit(comm, out, tmp):
    rank, size = dist.rank(), dist.size()
    x, y = token_data(13 * size + 2, seed=7)
    xv, yv = token_data(5 * size + 1, seed=8)
    xs, ys = dist.shard(x, y)
    val = dist.shard(xv[rank:], yv[rank:])  # different validation data per rank: the local figures differ
    model = sentiment_model(seed=3 + rank)
    model.compile(optimizer=dist.DistributedOptimizer(optim.Adam(0.01)), loss="binary_crossentropy",
                  metrics=["accuracy"])
    rec = Recorder(val)
    es = callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=-1.0)  # never "improves" after epoch 0
    ck = callbacks.ModelCheckpoint(os.path.join(tmp, f"ckpt_rank{rank}.fastrnn"), monitor="val_loss")
    hist = model.fit(xs, ys, batch_size=4, epochs=6, validation_data=val, callbacks=[es, ck, rec], verbose=1,
                     shuffle=True, seed=rank)
    model.save(os.path.join(tmp, f"model_rank{rank}.fastrnn"))
    out["fit"] = {"history": hist.history, "batches": rec.batches, "epochs": rec.epochs,
                  "local_val": rec.local_val, "n_train": len(ys), "n_val": len(val[1]),
                  "stopped_epoch": es.stopped_epoch, "digest": digest(model)}

    # a stop requested by one rank in the middle of an epoch stops every rank after the same batch
    model = sentiment_model(seed=3)
    model.compile(optimizer=dist.DistributedOptimizer("sgd"), loss="binary_crossentropy")
    rec = Recorder(val)
    hist = model.fit(xs, ys, batch_size=4, epochs=4, callbacks=[StopOnRank(size - 1, 1, 1), rec], verbose=0)
    out["stop"] = {"epochs_run": len(hist.history["loss"]), "batches": rec.batches, "digest": digest(model)}

    # a NaN loss on the last rank with TerminateOnNaN: that rank skips its update but still joins the
    # reduction (weight 0); every rank stops after the same batch, weights identical
    model = sentiment_model(seed=3)
    model.compile(optimizer=dist.DistributedOptimizer("sgd"), loss="mse")
    rec = Recorder(val)
    ys_nan = ys.astype(np.float32).copy()
    if rank == size - 1:
        ys_nan[5] = np.nan  # batch 1 of epoch 0 (batch size 4)
    hist = model.fit(xs, ys_nan, batch_size=4, epochs=3, callbacks=[callbacks.TerminateOnNaN(), rec], verbose=0,
                     shuffle=False)
    out["nan"] = {"epochs_run": len(hist.history["loss"]), "batches": rec.batches, "digest": digest(model),
                  "finite": bool(all(np.all(np.isfinite(w)) for w in model.get_weights()))}

    # tbptt under fit, and broadcast_parameters / allreduce on their own
    model = sequence_model(seed=rank)
    model.compile(optimizer=dist.DistributedOptimizer(optim.Adam(0.01)), loss="mse")
    rng = np.random.default_rng(0)
    xq = rng.standard_normal((10, 8, 3)).astype(np.float32)
    yq = rng.standard_normal((10, 8, 2)).astype(np.float32)
    model.fit(*dist.shard(xq, yq), batch_size=3, epochs=2, tbptt=3, verbose=0)
    out["tbptt_digest"] = digest(model)
    other = sentiment_model(seed=50 + rank)
    other.build((9,))
    dist.broadcast_parameters(other, root=size - 1)
    out["broadcast_digest"] = digest(other)
    out["broadcast_expected"] = digest(_built(50 + size - 1))
    out["allreduce"] = {op: dist.allreduce(np.array([rank + 1.0, -rank], dtype=np.float32), op=op).tolist()
                        for op in ("average", "sum", "max", "min")}


def _built(seed):
    m = sentiment_model(seed)
    m.build((9,))
    return m


def run_checks(tmp):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    out = {"rank": dist.rank(), "size": dist.size(), "local_rank": dist.local_rank()}
    check_steps(comm, out)
    check_fit(comm, out, tmp)
    with open(os.path.join(tmp, f"rank{dist.rank()}.json"), "w") as f:
        json.dump(out, f)


class FailOnRank(callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if dist.rank() == 1 and batch == 2:
            raise ValueError("injected failure on rank 1 at batch 2")


def run_fail():
    x, y = token_data(64, seed=0)
    model = sentiment_model(seed=0)
    model.compile(optimizer=dist.DistributedOptimizer("adam"), loss="binary_crossentropy")
    model.fit(*dist.shard(x, y), batch_size=4, epochs=50, callbacks=[FailOnRank()], verbose=0)
    print(f"FINISHED rank {dist.rank()}", flush=True)


if __name__ == "__main__":
    fr.set_num_threads(1)
    dist.init()
    if sys.argv[1] == "checks":
        run_checks(sys.argv[2])
    elif sys.argv[1] == "fail":
        run_fail()
    else:
        raise SystemExit(f"unknown scenario {sys.argv[1]!r}")
