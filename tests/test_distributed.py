"""fastrnn.distributed: data-parallel training.

* In this process (no MPI started): the sharding helpers, the gradient buckets against a
  simulated second rank (layout, order, weighting, overlap), the NCCL path's CPU-side logic with
  stand-ins for CuPy / NCCL, the optimizer wrapper's delegation and saving, the lazy import.
* Under ``mpiexec -n 2`` and ``-n 3`` (uneven shards; tests/_mpi_worker.py records, the tests
  here compare the ranks' records): identical weights on every rank after every step; a step on
  shards equals one process stepping on the whole batch; fit with validation data, EarlyStopping,
  ModelCheckpoint, tbptt; a stop on one rank stops all; save on rank 0 only; a rank that raises
  ends every rank instead of hanging.

mpi4py (and an MPI) are test dependencies: these tests fail, not skip, without them.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import mpi4py  # noqa: F401  (a test dependency: fail here when it is missing)
import numpy as np
import pytest

import fastrnn as fr
from fastrnn import layers, optim
from fastrnn.distributed import _buckets, _nccl, _optimizer, _world, sharding
from fastrnn.models import Sequential

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_mpi_worker.py"
# the directory holding the fastrnn this test process imported (site-packages for an install, the
# source tree's python/ for a development build), so that the ranks import the same package
PYTHON_DIR = Path(fr.__file__).resolve().parent.parent
MPI_TIMEOUT = 120


# ------------------------------------------------------------------------------------ sharding
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 17])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_shard_indices_partition_and_balance(n, size, shuffle):
    parts = [sharding.shard_indices(n, r, size, shuffle=shuffle, seed=5, epoch=2) for r in range(size)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))  # every sample exactly once
    lens = [len(p) for p in parts]
    assert max(lens) - min(lens) <= 1 and lens == sorted(lens, reverse=True)
    drop = [sharding.shard_indices(n, r, size, shuffle=shuffle, seed=5, epoch=2, remainder="drop")
            for r in range(size)]
    assert all(len(p) == n // size for p in drop)
    assert len(set(np.concatenate(drop).tolist())) == (n // size) * size
    pad = [sharding.shard_indices(n, r, size, shuffle=shuffle, seed=5, epoch=2, remainder="pad") for r in range(size)]
    per = -(-n // size)
    assert all(len(p) == per for p in pad)
    assert set(np.concatenate(pad).tolist()) == set(range(n))


def test_shard_indices_same_permutation_per_epoch_and_seed():
    a = [sharding.shard_indices(20, r, 3, shuffle=True, seed=1, epoch=0) for r in range(3)]
    b = [sharding.shard_indices(20, r, 3, shuffle=True, seed=1, epoch=0) for r in range(3)]
    c = [sharding.shard_indices(20, r, 3, shuffle=True, seed=1, epoch=1) for r in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert np.concatenate(a).tolist() == np.random.default_rng([1, 0]).permutation(20).tolist()


def test_shard_arrays_and_lists():
    x, y = np.arange(14).reshape(7, 2), np.arange(7)
    parts = [sharding.shard(x, y, rank=r, size=3) for r in range(3)]
    assert [p[1].tolist() for p in parts] == [[0, 1, 2], [3, 4], [5, 6]]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), x)
    assert np.shares_memory(parts[1][0], x)  # contiguous shards are views
    xs = sharding.shard([x, x * 10], y, rank=1, size=2, shuffle=True, seed=3)
    idx = sharding.shard_indices(7, 1, 2, shuffle=True, seed=3)
    assert np.array_equal(xs[0][1], x[idx] * 10) and np.array_equal(xs[1], y[idx])
    assert sharding.shard(y, rank=2, size=3).tolist() == [5, 6]


def test_shard_batches_split_every_batch_the_same_way():
    from fastrnn.data import batches

    x, y = np.arange(22), np.arange(22) * 2
    got = [list(sharding.shard_batches(batches(x, y, batch_size=8), r, 3)) for r in range(3)]
    assert [len(g) for g in got] == [3, 3, 3]  # same number of batches on every rank
    for b in range(3):
        joined = np.concatenate([got[r][b][0] for r in range(3)])
        assert np.array_equal(joined, x[b * 8:(b + 1) * 8])
        assert all(np.array_equal(got[r][b][1], got[r][b][0] * 2) for r in range(3))
    with pytest.raises(ValueError, match="fewer than the 4 ranks"):
        list(sharding.shard_batches(batches(x, batch_size=7), 0, 4))  # last batch: 1 sample
    kept = list(sharding.shard_batches(batches(x, batch_size=7), 0, 4, remainder="drop"))
    assert len(kept) == 3


@pytest.mark.parametrize("call, match", [
    (lambda: sharding.shard_indices(5, 3, 3), "rank"),
    (lambda: sharding.shard_indices(5, 0, 0), "size"),
    (lambda: sharding.shard_indices(-1, 0, 1), "n"),
    (lambda: sharding.shard_indices(5, 0, 2, remainder="wrap"), "remainder"),
    (lambda: sharding.shard_indices(5, 0, None), "rank, size"),
    (lambda: sharding.shard(np.zeros(3), np.zeros(4), rank=0, size=1), "same number"),
    (lambda: sharding.shard(rank=0, size=1), "at least one"),
])
def test_sharding_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_sharding_without_init_asks_for_rank_and_size(monkeypatch):
    monkeypatch.setitem(_world._state, "comm", None)
    with pytest.raises(ValueError, match="init"):
        sharding.shard_indices(4)


# ------------------------------------------------------------------------------------ buckets
class RecordingComm:
    """A rank of a group of ``size`` whose other ranks' bucket contents are ``remote[b]`` (already
    summed); records every call."""

    def __init__(self, size=2, remote=None, rank=0):
        self.size, self.rank = size, rank
        self.remote = remote or {}
        self.calls = []
        self.sent = []

    def iallreduce(self, buf):
        self.sent.append(buf.copy())
        b = len(self.sent) - 1
        self.calls.append(("iallreduce", b))
        if b in self.remote:
            buf += self.remote[b]
        return b

    def wait(self, handle):
        self.calls.append(("wait", handle))

    def progress(self, handles):
        self.calls.append(("progress", len(handles)))

    def allreduce(self, buf, op="sum"):
        pass

    def bcast_object(self, obj, root):
        return obj

    def bcast_array(self, buf, root):
        pass


def _model(seed=0, units=5):
    fr.set_seed(seed)
    m = Sequential([layers.Embedding(30, 4, mask_zero=True), layers.LSTM(units), layers.Dense(3),
                    layers.Dense(1, activation="sigmoid")])
    m.build((6,))
    return m


def _batch(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 30, size=(n, 6)).astype(np.int32)
    x[: n // 2, 4:] = 0
    return x, (rng.random(n) < 0.5).astype(np.float32)


def _grads(model, x, y):
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    model.zero_grad()
    pred = model(x, training=True)
    total, count, d = model.loss.sum_and_grad(y, pred, model.output_mask)
    model.backward(d / count)
    return [p.grad.copy() for p in model.parameters()], count


@pytest.mark.parametrize("bucket_bytes", [1, 64, 700, 1 << 20])
def test_buckets_layout_backward_order_and_weight_slot(bucket_bytes):
    m = _model()
    params = m.parameters()
    red = _buckets.BucketReducer(params, RecordingComm(), bucket_bytes)
    members = [i for b in red.buckets for i in b[0]]
    assert members == list(range(len(params)))[::-1]  # backward order, each parameter once
    sizes = [b[2].size for b in red.buckets]
    assert sum(sizes) == sum(p.size for p in params) + 1  # + the weight slot of bucket 0
    if bucket_bytes == 1 << 20:
        assert len(red.buckets) == 1
    for members, _, buf in red.buckets:
        assert buf.dtype == np.float32 and buf.flags.c_contiguous
        payload = sum(params[i].size for i in members)
        assert payload * 4 <= max(bucket_bytes, 4 * max(params[i].size for i in members) + 4)


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("bucket_bytes", [64, 1 << 20])
def test_weighted_average_equals_the_gradient_of_the_union(overlap, bucket_bytes):
    """Rank 0 holds 5 samples, the simulated rank 1 holds 2: the reduced gradient is the gradient
    of the 7 samples' mean loss (not the mean of the two ranks' means)."""
    xa, ya = _batch(5, 1)
    xb, yb = _batch(2, 2)
    want, _ = _grads(_model(), np.concatenate([xa, xb]), np.concatenate([ya, yb]))
    gb, nb = _grads(_model(), xb, yb)
    # what rank 1 would send: its buckets packed by an identical reducer
    remote_model = _model()
    for p, g in zip(remote_model.parameters(), gb):
        p.grad[...] = g
    capture = RecordingComm()
    rr = _buckets.BucketReducer(remote_model.parameters(), capture, bucket_bytes)
    rr.start(nb)
    rr.finish()
    comm = RecordingComm(remote=dict(enumerate(capture.sent)))
    m = _model()
    m.compile(optimizer="sgd", loss="binary_crossentropy")
    red = _buckets.BucketReducer(m.parameters(), comm, bucket_bytes)
    m._grad_ready_hook = (lambda lay: red.grads_ready(lay.parameters())) if overlap else None
    m.zero_grad()
    pred = m(xa, training=True)
    total, count, d = m.loss.sum_and_grad(ya, pred, m.output_mask)
    red.start(count)
    m.backward(d / count)
    launched_in_backward = sum(1 for c in comm.calls if c[0] == "iallreduce")
    assert red.finish() == count + nb
    for p, w in zip(m.parameters(), want):
        np.testing.assert_allclose(p.grad, w, rtol=1e-5, atol=1e-7)
    n_buckets = len(red.buckets)
    assert [c[1] for c in comm.calls if c[0] == "iallreduce"] == list(range(n_buckets))  # in order
    # with overlap the buckets start during the backward pass (each when its layers are done)
    assert launched_in_backward == (n_buckets if overlap else 0)


def test_buckets_start_in_order_whatever_order_the_signals_come():
    m = _model()
    params = m.parameters()
    comm = RecordingComm(size=2)
    red = _buckets.BucketReducer(params, comm, 64)
    assert len(red.buckets) >= 3
    red.start(1.0)
    first_bucket_params = [params[i] for i in red.buckets[0][0]]
    last_bucket_params = [params[i] for i in red.buckets[-1][0]]
    red.grads_ready(last_bucket_params)  # ready early but must wait for the others
    assert not [c for c in comm.calls if c[0] == "iallreduce"]
    red.grads_ready(first_bucket_params)
    assert [c[1] for c in comm.calls if c[0] == "iallreduce"] == [0]
    red.finish()
    assert [c[1] for c in comm.calls if c[0] == "iallreduce"] == list(range(len(red.buckets)))


def test_zero_weight_rank_contributes_nothing_and_all_zero_total_gives_zero():
    m = _model()
    for p in m.parameters():
        p.grad[...] = 1.0
    comm = RecordingComm()
    red = _buckets.BucketReducer(m.parameters(), comm, 1 << 20)
    red.start(0.0)
    assert red.finish() == 0.0
    assert all(np.all(p.grad == 0) for p in m.parameters())
    assert np.all(comm.sent[0] == 0)
    with pytest.raises(ValueError, match="weight"):
        red.start(-1.0)


def test_buckets_skip_frozen_parameters_and_check_wire_dtype():
    m = _model()
    m.layers[0].trainable = False
    for p in m.layers[0].parameters():
        p.trainable = False
    red = _buckets.BucketReducer(m.parameters(), RecordingComm(), 1 << 20)
    assert sum(b[2].size for b in red.buckets) == sum(p.size for p in m.parameters() if p.trainable) + 1
    with pytest.raises(ValueError, match="wire_dtype"):
        _buckets.BucketReducer(m.parameters(), RecordingComm(), 64, np.int32)
    m64 = Sequential([layers.Dense(2, dtype="float64")])
    m64.build((3,))
    red = _buckets.BucketReducer(m64.parameters() + _model().parameters(), RecordingComm(), 64, np.float64)
    assert all(b[2].dtype == np.float64 for b in red.buckets)
    with pytest.raises(ValueError, match="several dtypes"):
        _buckets.BucketReducer(m64.parameters() + _model().parameters(), RecordingComm(), 64, None)


def test_functional_model_signals_each_layer_once_after_its_last_use():
    inp = fr.Input((4,))
    shared = layers.Dense(4, activation="tanh")
    h = shared(shared(inp))  # one layer, two nodes
    out = layers.Dense(1)(h)
    m = fr.Model(inp, out)
    seen = []
    m._grad_ready_hook = seen.append
    m(np.ones((2, 4), np.float32), training=True)
    m.backward(np.ones((2, 1), np.float32))
    assert [lay.name for lay in seen] == [m.layers[-1].name, shared.name]


# ------------------------------------------------------------------------------------ the optimizer
@pytest.fixture
def fake_world(monkeypatch):
    """A 2-rank world in this process: this is rank ``comm.rank``, the other rank's buckets are
    whatever the test puts in ``comm.remote``."""
    comm = RecordingComm(size=2)
    monkeypatch.setitem(_world._state, "comm", comm)
    monkeypatch.setitem(_world._state, "local_rank", 0)
    monkeypatch.setitem(_world._state, "local_size", 2)
    return comm


def test_distributed_optimizer_averages_before_global_clipping(fake_world):
    """The other rank sends exactly this rank's gradient times 3 (weight 1 each): the average is 2 g,
    and global_clipnorm must clip THAT, not this rank's g."""
    m = _model()
    x, y = _batch(4, 3)
    g, _ = _grads(_model(), x, y)
    norm = float(np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in g)))
    clip = 1.5 * norm  # above |g| but below |2 g|
    dopt = _optimizer.DistributedOptimizer(optim.SGD(1.0, global_clipnorm=clip), bucket_bytes=1 << 30)
    params = m.parameters()
    red = dopt._reducer_for(params)
    order = red.buckets[0][0]
    remote = np.concatenate([3 * g[i].ravel() for i in order] + [np.ones(1, np.float32)]).astype(np.float32)
    fake_world.remote = {0: remote}
    before = [p.value.copy() for p in params]
    for p, gi in zip(params, g):
        p.grad[...] = gi
    dopt.step(params)  # no _begin_step: weight 1, the plain average
    for p, b, gi in zip(params, before, g):
        np.testing.assert_allclose(b - p.value, 2 * gi * (clip / (2 * norm)), rtol=2e-5, atol=1e-7)
    assert dopt.iterations == 1


def test_distributed_optimizer_delegates_and_saves_the_wrapped_one(fake_world, tmp_path):
    inner = optim.Adam(0.01, global_clipnorm=1.0)
    dopt = _optimizer.DistributedOptimizer(inner)
    assert dopt.learning_rate == 0.01 and dopt.beta_1 == 0.9 and dopt.global_clipnorm == 1.0
    dopt.learning_rate = 0.5
    assert inner.learning_rate == 0.5 and dopt.lr == 0.5
    assert optim.serialize(dopt) == optim.serialize(inner)
    assert "Adam" in repr(dopt)
    with pytest.raises(TypeError, match="already"):
        _optimizer.DistributedOptimizer(dopt)
    with pytest.raises(ValueError, match="bucket_bytes"):
        _optimizer.DistributedOptimizer("adam", bucket_bytes=0)
    with pytest.raises(ValueError, match="wire_dtype"):
        _optimizer.DistributedOptimizer("adam", wire_dtype="int8")
    m = _model()
    m.compile(optimizer=dopt, loss="binary_crossentropy")
    m.save(tmp_path / "root.fastrnn")  # rank 0 writes
    loaded = fr.load_model(tmp_path / "root.fastrnn")
    assert type(loaded.optimizer) is optim.Adam and loaded.optimizer.learning_rate == 0.5
    fake_world.rank = 1
    m.save(tmp_path / "other.fastrnn")
    m.save_weights(tmp_path / "other.weights")
    assert not (tmp_path / "other.fastrnn").exists() and not (tmp_path / "other.weights").exists()


def test_metric_average_weighs_by_samples(fake_world):
    cb = _optimizer.MetricAverageCallback()
    cb.set_params({"samples": 30, "val_samples": 10})

    def fake_allreduce(buf, op="sum"):  # the other rank: loss 2.0 over 10 samples, val_loss 4.0 over 30
        buf += np.array([2.0 * 10, 4.0 * 30, 10, 30])

    fake_world.allreduce = fake_allreduce
    logs = {"loss": 1.0, "val_loss": 3.0}
    cb.on_epoch_end(0, logs)
    assert logs == {"loss": pytest.approx((30 * 1 + 10 * 2) / 40), "val_loss": pytest.approx((10 * 3 + 30 * 4) / 40)}
    dopt = _optimizer.DistributedOptimizer("sgd")
    given = _optimizer.MetricAverageCallback()
    es = fr.callbacks.EarlyStopping()
    assert dopt._training_callbacks([es, given]) == [given, es]  # moved first
    added = dopt._training_callbacks([es])
    assert isinstance(added[0], _optimizer.MetricAverageCallback) and added[1] is es
    csv = fr.callbacks.CSVLogger("log.csv")
    assert csv in dopt._training_callbacks([csv, es])  # rank 0 logs
    fake_world.rank = 1
    assert dopt._training_callbacks([csv, es])[1:] == [es]  # the other ranks do not


def test_broadcast_and_allreduce_check_their_arguments(fake_world):
    with pytest.raises(ValueError, match="root"):
        _optimizer.broadcast_parameters(_model(), root=2)
    unbuilt = Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        _optimizer.broadcast_parameters(unbuilt)
    with pytest.raises(TypeError, match="Parameter"):
        _optimizer.broadcast_parameters([np.zeros(2)])
    with pytest.raises(ValueError, match="op"):
        _optimizer.allreduce(np.zeros(2), op="prod")
    np.testing.assert_array_equal(_optimizer.allreduce(np.array([2, 4]), op="average"), [1.0, 2.0])  # 2 ranks


def test_one_rank_world_is_plain_training(monkeypatch):
    comm = RecordingComm(size=1)
    monkeypatch.setitem(_world._state, "comm", comm)
    x, y = _batch(8, 4)
    a, b = _model(), _model()
    a.compile(optimizer=_optimizer.DistributedOptimizer(optim.Adam(0.01)), loss="binary_crossentropy")
    b.compile(optimizer=optim.Adam(0.01), loss="binary_crossentropy")
    a.fit(x, y, batch_size=3, epochs=2, verbose=0, seed=1)
    b.fit(x, y, batch_size=3, epochs=2, verbose=0, seed=1)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert comm.calls == []


def test_not_initialized_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(_world._state, "comm", None)
    with pytest.raises(RuntimeError, match="init"):
        _world.rank()
    with pytest.raises(RuntimeError, match="init"):
        _optimizer.DistributedOptimizer("sgd").step([])


def test_init_without_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(_world._state, "comm", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"fastrnn\[mpi\]"):
        _world.init()


# ------------------------------------------------------------------------------------ NCCL (stand-ins)
class _DevArray(np.ndarray):
    """A NumPy array posing as a CuPy one: ``.data.ptr`` is its address."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _fake_cupy():
    registry = {}
    calls = []

    class Stream:
        ptr = 1234
        synced = 0

        def synchronize(self):
            Stream.synced += 1

    stream = Stream()

    class Comm:
        def __init__(self, size, uid, rank):
            calls.append(("init", size, uid, rank))

        def allReduce(self, send, recv, count, dtype, op, stream_ptr):
            calls.append(("allReduce", send, recv, count, dtype, op, stream_ptr))
            registry[send][...] *= 2  # the other rank sent the same

    nccl = types.SimpleNamespace(NCCL_FLOAT16=6, NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0,
                                 get_unique_id=lambda: (b"uid", 42), NcclCommunicator=Comm)

    def zeros(n, dtype):
        a = np.zeros(n, dtype).view(_DevArray)
        registry[a.ctypes.data] = a
        return a

    cupy = types.SimpleNamespace(zeros=zeros, multiply=np.multiply,
                                 cuda=types.SimpleNamespace(get_current_stream=lambda: stream))
    return cupy, nccl, calls, stream


@pytest.mark.parametrize("rank", [0, 1])
def test_nccl_unique_id_travels_over_mpi_and_buckets_reduce_in_place(rank):
    cupy, nccl, calls, stream = _fake_cupy()
    sent = []

    class Mpi:
        size = 2

        def bcast_object(self, obj, root):
            sent.append((obj, root))
            return (b"uid", 42)  # rank 0's

    mpi = Mpi()
    mpi.rank = rank
    comm = _nccl.NcclComm(mpi, cupy=cupy, nccl=nccl)
    assert calls[0] == ("init", 2, (b"uid", 42), rank)
    assert sent == [((b"uid", 42) if rank == 0 else None, 0)]  # only rank 0 makes the id
    m = _model()
    for p in m.parameters():
        p.grad[...] = 0.5
    red = _buckets.BucketReducer(m.parameters(), comm, 200, np.float32, xp=cupy)
    red.start(3.0)
    assert red.finish() == 6.0
    assert all(np.allclose(p.grad, 0.5) for p in m.parameters())  # (2 * 3 * 0.5) / 6
    ar = [c for c in calls if c[0] == "allReduce"]
    assert len(ar) == len(red.buckets)
    for c, (_, _, buf) in zip(ar, red.buckets):
        assert c[1] == c[2] == buf.ctypes.data and c[3] == buf.size and c[4] == nccl.NCCL_FLOAT32
        assert c[6] == stream.ptr
    assert stream.synced == len(red.buckets)


def test_nccl_dtypes():
    _, nccl, _, _ = _fake_cupy()
    assert _nccl.nccl_dtype(nccl, np.float16) == 6 and _nccl.nccl_dtype(nccl, "float64") == 8
    with pytest.raises(TypeError, match="int32"):
        _nccl.nccl_dtype(nccl, np.int32)


# ------------------------------------------------------------------------------------ under mpiexec
def _mpiexec():
    exe = Path(sys.executable).parent / "mpiexec"
    if not exe.exists():
        import shutil

        found = shutil.which("mpiexec")
        assert found, "mpiexec not found next to the Python executable nor on PATH (pip install 'fastrnn[mpi]')"
        exe = Path(found)
    cmd = [str(exe)]
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30).stdout
    if "HYDRA" in version:  # MPICH: start the ranks as local processes (no ssh / no resource manager)
        cmd += ["-launcher", "fork"]
    return cmd


def _run_mpi(n, argv, timeout, cwd=None):
    """``mpiexec -n N argv...`` in its own process group, killed whole (mpiexec, its proxies and
    every rank) when it outlives ``timeout``: a hang fails the test instead of blocking the suite."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PYTHON_DIR), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_mpiexec() + ["-n", str(n), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {n} {' '.join(argv[1:])} hung for {timeout} s:\n{out[-2000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _launch(n, *args, timeout=MPI_TIMEOUT):
    t0 = time.monotonic()
    r = _run_mpi(n, [sys.executable, str(WORKER), *args], timeout)
    return r, time.monotonic() - t0


@pytest.fixture(scope="module", params=[2, 3], ids=["n2", "n3"])
def ranks(request, tmp_path_factory):
    n = request.param
    out = tmp_path_factory.mktemp(f"mpi{n}")
    r, _ = _launch(n, "checks", str(out))
    assert r.returncode == 0, f"mpiexec -n {n} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    recs = [json.loads((out / f"rank{i}.json").read_text()) for i in range(n)]
    return n, out, recs, r


def test_mpi_ranks_and_sizes(ranks):
    n, _, recs, _ = ranks
    assert [r["rank"] for r in recs] == list(range(n)) and {r["size"] for r in recs} == {n}
    assert sorted(r["local_rank"] for r in recs) == list(range(n))  # one machine


@pytest.mark.parametrize("case", ["sgd", "adam_global_clip", "rmsprop_clipnorm_tbptt"])
def test_mpi_step_on_shards_equals_one_process_on_the_batch(ranks, case):
    n, _, recs, _ = ranks
    for overlap in (1, 0):
        key = f"step_{case}_overlap{overlap}"
        for r in recs:
            assert r[key]["identical"], (key, r["rank"])  # bitwise-identical weights after every step
            assert r[key]["grad_rel_err"] < 1e-6, (key, r[key])  # the reduced gradient = the batch's
            tol = 1e-6 if case == "sgd" else 1e-4  # Adam / RMSprop normalize tiny, sign-noisy entries
            assert r[key]["max_rel_err"] < tol, (key, r[key])
        assert len({r[key]["digest"] for r in recs}) == 1
    # overlapped and not overlapped reductions give the same bits
    assert recs[0][f"step_{case}_overlap1"]["digest"] == recs[0][f"step_{case}_overlap0"]["digest"]
    shards = [r[f"step_{case}_overlap1"]["shard"] for r in recs]
    assert max(shards) - min(shards) == 1  # the batches were uneven


def test_mpi_fit_keeps_every_rank_identical_after_every_step(ranks):
    n, _, recs, _ = ranks
    fits = [r["fit"] for r in recs]
    steps = [{(e, b): d for e, b, d in f["batches"]} for f in fits]
    common = set.intersection(*[set(s) for s in steps])
    assert len(common) >= 4
    for key in common:
        assert len({s[key] for s in steps}) == 1, key
    assert len({tuple(f["epochs"]) for f in fits}) == 1
    assert len({f["digest"] for f in fits}) == 1
    if n == 3:  # 41 samples: shards 14, 14, 13 with batch 4 -> 4, 4, 4 steps; uneven shard sizes recorded
        assert sorted({f["n_train"] for f in fits}) == [13, 14]
    assert len({r["tbptt_digest"] for r in recs}) == 1


def test_mpi_logs_are_the_sample_weighted_average_and_early_stopping_agrees(ranks):
    n, _, recs, _ = ranks
    fits = [r["fit"] for r in recs]
    hist = fits[0]["history"]
    assert all(f["history"] == hist for f in fits)  # the same figures on every rank
    locals_ = [[v["loss"] for v in f["local_val"]] for f in fits]
    assert len({tuple(lv) for lv in locals_}) == n  # the ranks' own validation losses differ
    w = np.array([f["n_val"] for f in fits], dtype=np.float64)
    want = (np.array(locals_) * w[:, None]).sum(axis=0) / w.sum()
    np.testing.assert_allclose(hist["val_loss"], want, rtol=1e-9)
    assert {f["stopped_epoch"] for f in fits} == {fits[0]["stopped_epoch"]} and fits[0]["stopped_epoch"] > 0
    assert len(hist["loss"]) == fits[0]["stopped_epoch"] + 1 < 6


def test_mpi_stop_on_one_rank_stops_all_after_the_same_batch(ranks):
    n, _, recs, _ = ranks
    stops = [r["stop"] for r in recs]
    assert {s["epochs_run"] for s in stops} == {2}
    last = {max((e, b) for e, b, _ in s["batches"]) for s in stops}
    assert last == {(1, 1)}
    assert len({s["digest"] for s in stops}) == 1


def test_mpi_nan_on_one_rank_with_terminate_on_nan_stops_all_without_hanging(ranks):
    n, _, recs, _ = ranks
    nans = [r["nan"] for r in recs]
    assert {s["epochs_run"] for s in nans} == {1}
    assert {max((e, b) for e, b, _ in s["batches"]) for s in nans} == {(0, 1)}  # stopped after batch 1
    assert len({s["digest"] for s in nans}) == 1 and all(s["finite"] for s in nans)


def test_mpi_save_on_rank_zero_only_and_broadcast_allreduce(ranks):
    n, out, recs, _ = ranks
    assert sorted(p.name for p in out.glob("*.fastrnn")) == ["ckpt_rank0.fastrnn", "model_rank0.fastrnn"]
    model = fr.load_model(out / "model_rank0.fastrnn")
    assert type(model.optimizer) is optim.Adam
    for r in recs:
        assert r["broadcast_digest"] == r["broadcast_expected"]
        assert r["allreduce"] == {"average": [(n + 1) / 2, -(n - 1) / 2], "sum": [n * (n + 1) / 2, -n * (n - 1) / 2],
                                  "max": [float(n), 0.0], "min": [1.0, -(n - 1.0)]}


def test_mpi_progress_bar_on_rank_zero_only(ranks):
    n, _, _, r = ranks
    starts = re.findall(r"Epoch 1/6: +0%", r.stderr)  # tqdm writes to stderr; one bar start per rank that shows
    assert len(starts) == 1


def test_mpi_results_are_deterministic_for_a_fixed_number_of_ranks(ranks, tmp_path):
    n, _, recs, _ = ranks
    r, _ = _launch(n, "checks", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((tmp_path / "rank0.json").read_text())
    keys = [k for k in recs[0] if k.startswith("step_")]
    assert [again[k]["digest"] for k in keys] == [recs[0][k]["digest"] for k in keys]
    assert again["fit"]["digest"] == recs[0]["fit"]["digest"] and again["fit"]["history"] == recs[0]["fit"]["history"]
    assert again["tbptt_digest"] == recs[0]["tbptt_digest"]


def test_mpi_a_failing_rank_ends_every_rank(tmp_path):
    r, elapsed = _launch(2, "fail", str(tmp_path), timeout=60)
    assert r.returncode != 0
    assert "injected failure on rank 1 at batch 2" in r.stderr
    assert "aborting every rank" in r.stderr
    assert "FINISHED" not in r.stdout  # rank 0 did not carry on alone (50 epochs would take far longer)
    assert elapsed < 30


def test_mpi_readme_example_runs_under_mpiexec(tmp_path):
    """The README's data-parallel example (a ``py`` block: it needs mpiexec), on small random data."""
    text = (HERE.parent / "README.md").read_text()
    section = text[text.index("## Data-parallel training"):]
    block = re.search(r"```py\n(.*?)```", section, re.S).group(1)
    prelude = ("import numpy as np\n"
               "rng = np.random.default_rng(0)\n"
               "x = rng.integers(0, 10000, size=(90, 12)).astype(np.int32)\n"
               "y = (rng.random(90) < 0.5).astype(np.float32)\n"
               "x_val, y_val = x[:20], y[:20]\n")
    script = tmp_path / "train.py"
    script.write_text(prelude + block + "print('rank', dist.rank(), 'epochs', len(model.history.history['loss']))\n")
    r = _run_mpi(2, [sys.executable, str(script)], MPI_TIMEOUT, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(re.findall(r"rank (\d) epochs (\d+)", r.stdout))
    assert [rk for rk, _ in runs] == ["0", "1"] and runs[0][1] == runs[1][1]
    assert (tmp_path / "sentiment.fastrnn").is_file()
