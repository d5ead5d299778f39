"""Training the screening model on fresh samples (train.screening_data.FreshBatches) and from a shipped model's
weights (screening_train --init)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from c4u_engine.data.creative_usability import creative_sample
from c4u_engine.errors import InvalidInputError
from c4u_engine.screening.rfnet import RFNet, RFNetConfig
from c4u_engine.train.screening_data import FreshBatches, synthetic_arrays
from c4u_engine.train.screening_export import export_screening
from c4u_engine.train.screening_train import main, train


def test_fresh_batches_draw_new_samples_of_both_generators_deterministically():
    fresh = FreshBatches(seed=5, renders_share=0.6)
    b1 = fresh.batch(1, 5)
    assert b1["source"].tolist() == ["renders"] * 3 + ["creatives"] * 2
    # batch 1 holds renders 3..5 and creatives 2..3 of the seed: the ones after batch 0's
    renders = synthetic_arrays(5, 3, start=3, log=None)
    creatives = synthetic_arrays(5, 2, start=2, log=None, draw=creative_sample)
    np.testing.assert_array_equal(b1["generated"][:3], renders["generated"])
    np.testing.assert_array_equal(b1["generated"][3:], creatives["generated"])
    np.testing.assert_array_equal(b1["label"], np.concatenate([renders["label"], creatives["label"]]))
    np.testing.assert_array_equal(fresh.batch(1, 5)["generated"], b1["generated"])  # same step, same samples
    b0 = fresh.batch(0, 5)
    assert not any((b0["generated"][i] == b1["generated"][i]).all() for i in range(5))


def test_fresh_batches_refuse_a_share_outside_zero_one():
    with pytest.raises(InvalidInputError, match="renders_share"):
        FreshBatches(0, renders_share=1.5)


def _tiny() -> RFNet:
    torch.manual_seed(0)
    return RFNet(RFNetConfig(dim=16, heads=2, fusion_layers=1))


def test_training_on_fresh_batches_resumes_as_the_uninterrupted_run(tmp_path):
    fresh = FreshBatches(seed=1)
    straight = _tiny()
    train(straight, fresh, steps=3, seed=1, state=tmp_path / "a.safetensors", name="a", batch=5, log=None)
    resumed = _tiny()
    train(resumed, fresh, steps=2, seed=1, state=tmp_path / "b.safetensors", name="b", batch=5, every=1, log=None)
    again = _tiny()  # a new process: the weights come from the saved state, not from this initialisation
    with torch.no_grad():
        for p in again.parameters():
            p.add_(1.0)
    train(again, fresh, steps=3, seed=1, state=tmp_path / "b.safetensors", name="b", batch=5, log=None)
    for (k, v), w in zip(straight.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)
    assert any(not torch.equal(v, w) for v, w in zip(straight.state_dict().values(), _tiny().state_dict().values()))


_ARGS = ["--fresh", "--steps", "0", "--baseline-seeds", "0", "--n-test", "12", "--n-test-creatives", "6",
         "--encoder-strides", "2,2,1,2", "--fusion-layers", "1", "--seed", "4", "--test-seed", "3"]


def test_init_starts_from_a_model_directory_and_refuses_another_architecture(tmp_path, capsys):
    torch.manual_seed(3)
    shipped = export_screening(RFNet(RFNetConfig(fusion_layers=1, encoder_strides=(2, 2, 1, 2))), tmp_path / "m")
    assert main([str(tmp_path / "out"), *_ARGS, "--init", str(shipped)]) == 0
    before, after = load_file(str(shipped / "rfnet.safetensors")), load_file(str(tmp_path / "out/rfnet.safetensors"))
    assert before.keys() == after.keys()
    for k in before:  # zero steps: the exported model is the one it started from
        torch.testing.assert_close(before[k], after[k], msg=k)
    with pytest.raises(SystemExit):  # two fusion blocks: the one-block weights do not fit
        main([str(tmp_path / "out2"), *[a if a != "1" else "2" for a in _ARGS], "--init", str(shipped)])
    assert "weights do not fit this architecture" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "out3"), *_ARGS, "--init", str(tmp_path)])
    assert "no rfnet.safetensors there" in capsys.readouterr().err
