"""nclab.parallel: the shared worker pool, per-thread scratch buffers, NumPy-backed arrays."""

import threading

import pytest
import torch

from nclab.parallel import cpu_workers, empty, parallel_map, scratch


def test_parallel_map_keeps_order_and_uses_at_most_the_workers():
    seen, counts, lock = set(), set(), threading.Lock()

    def f(i):
        with lock:
            seen.add(threading.get_ident())
            counts.add(torch.get_num_threads())
        return i * i
    assert parallel_map(f, range(50), 2) == [i * i for i in range(50)]
    assert 1 <= len(seen) <= 2 and threading.get_ident() not in seen
    assert counts == {1}                                   # workers run single-threaded torch ops
    assert parallel_map(f, [3], 4) == [9]


def test_parallel_map_reraises_a_worker_error():
    def f(i):
        if i == 7:
            raise ValueError("item 7")
        return i
    with pytest.raises(ValueError, match="item 7"):
        parallel_map(f, range(20), 2)


def test_nested_parallel_map_runs_inline_instead_of_waiting_for_a_full_pool():
    """Every pool thread calling parallel_map again and waiting for it would wait forever; the
    nested calls run inline on the calling pool thread (checked with a deadline)."""
    outer_threads = set()

    def inner_on_same_thread(i):
        outer = threading.get_ident()
        outer_threads.add(outer)
        return parallel_map(lambda j: (threading.get_ident() == outer, i * 10 + j), range(3), 2)

    result = {}
    run = threading.Thread(target=lambda: result.setdefault("v", parallel_map(inner_on_same_thread, range(6), 2)),
                           daemon=True)
    run.start()
    run.join(60)
    assert not run.is_alive(), "nested parallel_map did not finish"
    assert result["v"] == [[(True, i * 10 + j) for j in range(3)] for i in range(6)]
    assert threading.get_ident() not in outer_threads


def test_cpu_workers_restores_the_thread_count():
    before = torch.get_num_threads()
    with cpu_workers(torch.device("cpu"), 3) as w:
        assert w == 3 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_workers(torch.device("meta"), 3) as w:
        assert w == 1


def test_scratch_is_reused_per_thread_and_grown():
    a = scratch("t", (4, 5), torch.float32, "cpu")
    b = scratch("t", (2, 3), torch.float32, "cpu")
    assert a.data_ptr() == b.data_ptr() and b.shape == (2, 3)
    c = scratch("t", (100, 100), torch.float32, "cpu")
    assert c.shape == (100, 100)
    other = []
    t = threading.Thread(target=lambda: other.append(scratch("t", (4, 5), torch.float32, "cpu").data_ptr()))
    t.start()
    t.join()
    assert other[0] != scratch("t", (4, 5), torch.float32, "cpu").data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.float16])
def test_empty_gives_the_requested_tensor(dtype):
    t = empty((3, 4), dtype, "cpu")
    assert t.shape == (3, 4) and t.dtype == dtype and t.device.type == "cpu" and t.is_contiguous()
