import pytest
import torch

from speechtrt.errors import InputError
from speechtrt.models import build_asr, build_tts, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("build", [lambda: build_asr("small", seed=5), lambda: build_asr("stream", seed=5)])
def test_asr_round_trip(tmp_path, build):
    model = build()
    path = save_checkpoint(model, tmp_path / "m.pt", meta={"wer": 0.5})
    loaded, meta = load_checkpoint(path)
    assert meta == {"wer": 0.5} and type(loaded) is type(model) and loaded.config == model.config
    x = torch.randn(1, 40, 80)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])


def test_tts_round_trip(tmp_path):
    model = build_tts(seed=2)
    loaded, _ = load_checkpoint(save_checkpoint(model, tmp_path / "tts.pt"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_bad_checkpoints_are_reported(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        load_checkpoint(junk)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a speechtrt-checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_checkpoint_holding_python_objects_is_one_line_without_torchs_advice(tmp_path):
    from fractions import Fraction

    torch.save({"format": "speechtrt-checkpoint/1", "meta": Fraction(1, 3)}, tmp_path / "objects.pt")
    with pytest.raises(InputError, match="holds Python objects") as info:
        load_checkpoint(tmp_path / "objects.pt")
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a PyTorch checkpoint file") as info:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
