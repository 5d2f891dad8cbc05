"""Griffin-Lim in exportable operations: exact STFT/iSTFT bases, the FFT twin, and ONNX Runtime parity."""

import numpy as np
import pytest
import torch

from speechtrt.models.vocoder import GriffinLim, MelConfig, _bases, log_mel_magnitude, stft_magnitude


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def speech_like():
    """Half a second of a 16 kHz harmonic tone with vibrato and an onset (deterministic)."""
    t = np.arange(8000) / 16000
    f0 = 140 + 10 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * np.minimum(1, t * 20) * 0.3
    return x.astype(np.float32)


def test_conv_stft_equals_torch_stft(speech_like):
    cfg = MelConfig()
    x = torch.from_numpy(speech_like)[None]
    ref = torch.stft(x, cfg.n_fft, cfg.hop, window=torch.hann_window(cfg.n_fft), center=True, pad_mode="constant",
                     return_complex=True).abs()
    mine = stft_magnitude(x, cfg)
    assert mine.shape == ref.shape == (1, cfg.n_freq, 1 + len(speech_like) // cfg.hop)
    assert rel(mine, ref) < 1e-5


def test_synthesis_basis_inverts_one_frame():
    analysis, synthesis, window_sq = _bases(64)
    frame = torch.randn(1, 1, 64)
    spec = torch.nn.functional.conv1d(frame, analysis)  # one frame: [1, 2F, 1]
    back = torch.nn.functional.conv_transpose1d(spec, synthesis)  # w · w · frame
    assert rel(back, frame * window_sq) < 1e-5


def test_griffin_lim_converges_towards_the_target_magnitude(speech_like):
    """Spectral convergence ‖|STFT(y)| − target‖ / ‖target‖ falls with the iterations (the target is the
    filterbank pseudo-inverse of the mel, itself not a consistent spectrogram, so it never reaches 0)."""
    cfg = MelConfig()
    mel = log_mel_magnitude(speech_like, cfg)[None]
    convergence = []
    for iters in (0, 4, 32):
        gl = GriffinLim(MelConfig(gl_iters=iters))
        with torch.no_grad():
            audio = gl(mel)
            target = gl.magnitude(mel)[0]
        assert audio.shape == (1, mel.shape[1] * cfg.hop)
        got = stft_magnitude(audio, cfg)[0, :, : mel.shape[1]]
        convergence.append(rel(got, target))
    assert convergence[0] > convergence[1] > convergence[2] and convergence[2] < 0.2
    with torch.no_grad():
        assert rel(gl.fast(mel), audio) < 3e-2  # the FFT twin follows the same iterations up to float rounding


def test_griffin_lim_batch_rows_are_independent(speech_like):
    gl = GriffinLim(MelConfig(gl_iters=4))
    mel = log_mel_magnitude(speech_like)[None]
    with torch.no_grad():
        alone = gl(mel)
        both = gl(torch.cat([mel, torch.flip(mel, dims=[1])]))
    assert rel(both[:1], alone) < 1e-3  # float rounding of a different GEMM blocking, grown by the iterations


@pytest.mark.slow
def test_griffin_lim_exports_and_matches_onnx_runtime(tmp_path, speech_like):
    """Dynamic batch and frames in one graph; ONNX Runtime equals PyTorch on shapes other than the example's.

    Iterations with momentum grow float32 rounding (PyTorch in float32 and float64 differ by ~7e-4 after the shipped
    32), so that is the scale of the tolerance; 12 iterations keep the export quick."""
    import onnxruntime as ort

    gl = GriffinLim(MelConfig(gl_iters=12)).eval()

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gl = gl

        def forward(self, mel):
            return self.gl(mel)

    batch, frames = torch.export.Dim("batch", min=1, max=16), torch.export.Dim("frames", min=2, max=400)
    example = torch.randn(2, 20, 80) - 4
    path = tmp_path / "gl.onnx"
    torch.onnx.export(Wrap().eval(), (example,), dynamo=True, input_names=["mel"], output_names=["audio"],
                      dynamic_shapes={"mel": {0: batch, 1: frames}}, opset_version=18).save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    real = log_mel_magnitude(speech_like)[None]
    for mel in (real, torch.cat([real[:, :17], real[:, 5:22], real[:, 9:26]]), torch.randn(1, 3, 80) - 4):
        with torch.no_grad():
            ref = gl(mel)
        got = torch.from_numpy(sess.run(None, {"mel": mel.numpy()})[0])
        assert got.shape == ref.shape == (mel.shape[0], mel.shape[1] * 256)
        assert rel(got, ref) < 5e-3
