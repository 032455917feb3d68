"""Decisions without running a quantizer: reduce_range from CPU flags, auto's mode from the weights."""

from __future__ import annotations

from edgeseq.quantize.auto import WeightProfile, choose, weight_profile
from edgeseq.quantize.cpu import cpu_flags, int8_cpu_settings


def test_reduce_range_follows_vnni(tmp_path):
    assert int8_cpu_settings(flags={"avx2", "fma"}, machine="x86_64").reduce_range is True
    assert int8_cpu_settings(flags={"avx2", "avx512_vnni"}, machine="x86_64").reduce_range is False
    assert int8_cpu_settings(flags={"avx2", "avx_vnni"}, machine="AMD64").reduce_range is False
    assert int8_cpu_settings(flags=set(), machine="aarch64").reduce_range is False
    unknown = int8_cpu_settings(machine="x86_64", cpuinfo=tmp_path / "none")  # no /proc/cpuinfo: be safe
    assert unknown.reduce_range is True and unknown.vnni is None


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags(tmp_path / "missing") is None


def test_auto_rules():
    lstm = WeightProfile({"LSTM": 800_000, "Gemm": 5_000})
    assert [c.mode for c in choose(lstm)] == ["dynamic", "dynamic", "fp16"]
    gru = WeightProfile({"GRU": 120_000, "Gemm": 4_000})
    first = choose(gru)[0]
    assert first.mode == "fp16" and "GRU" in first.reason
    conv = WeightProfile({"Conv": 400_000, "LSTM": 400_000})
    assert choose(conv, has_calibration=True)[0].mode == "static"
    # dynamic INT8 leaves convolutions float (ConvInteger is slower): ~0.62x of the bytes, float16 0.5x
    no_calib = choose(conv, has_calibration=False)[0]
    assert no_calib.mode == "fp16" and "--calibration" in no_calib.reason
    small_conv = choose(WeightProfile({"Conv": 1_000, "LSTM": 400_000}))[0]
    assert small_conv.mode == "dynamic" and "stay float32" in small_conv.reason
    assert [c.mode for c in choose(lstm, target="cuda")] == ["fp16"]


def test_weight_profile_of_exported_models(exported):
    gru = weight_profile(exported("gru"))
    assert gru.share("GRU") > 0.5 and choose(gru)[0].mode == "fp16"
    cnn = weight_profile(exported("conv1d_lstm"))
    assert cnn.by_op.get("Conv", 0) > 0 and choose(cnn, has_calibration=True)[0].mode == "dynamic"

