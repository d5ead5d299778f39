"""Metadata uploads (ops/device_metadata.py): inside reuse_uploads an array's content is uploaded once per device.

The CUDA branch is exercised with CPU tensors standing in for the device (torch's .to() is the same call); the
kernels' own tests cover what they read."""

from __future__ import annotations

import numpy as np
import torch

from c4u_engine.ops.device_metadata import reuse_uploads, upload


def _count_uploads(monkeypatch) -> list:
    calls = []
    real = torch.from_numpy

    def counting(a):
        calls.append(a.shape)
        return real(a)

    monkeypatch.setattr(torch, "from_numpy", counting)  # device_metadata imports torch when it uploads
    return calls


def test_host_kernels_read_the_arrays_in_place():
    a = np.arange(6, dtype=np.int32)
    ptrs, keep = upload("cpu", None, [a])
    assert ptrs == [a.ctypes.data] and keep == []


def test_inside_reuse_uploads_equal_content_is_uploaded_once(monkeypatch):
    calls = _count_uploads(monkeypatch)
    like = torch.zeros(1)  # its .device stands in for the GPU
    tables, lens = np.array([[0, 1], [2, 3]], np.int32), np.array([5, 7], np.int32)
    _, first = upload("cuda", like, [tables, lens])
    _, second = upload("cuda", like, [tables, lens])
    assert len(calls) == 4 and first[0] is not second[0]  # outside: every call uploads
    calls.clear()
    with reuse_uploads():
        ptrs1, keep1 = upload("cuda", like, [tables, lens])
        ptrs2, keep2 = upload("cuda", like, [tables.copy(), lens])  # same content, another array: reused
        ptrs3, keep3 = upload("cuda", like, [np.array([5, 8], np.int32)])  # new content: uploaded
        zeros_i32, zeros_i64 = upload("cuda", like, [np.zeros(2, np.int32)])[1], \
            upload("cuda", like, [np.zeros(2, np.int64)])[1]
    assert len(calls) == 5 and ptrs1 == ptrs2 and keep1[0] is keep2[0]
    assert keep3[0].tolist() == [5, 8] and zeros_i32[0].dtype != zeros_i64[0].dtype  # the key holds the dtype
    assert np.array_equal(keep1[0].numpy(), tables) and np.array_equal(keep1[1].numpy(), lens)
    calls.clear()
    upload("cuda", like, [tables])  # the reuse ends with the block
    assert len(calls) == 1
