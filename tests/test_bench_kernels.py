import json

from kvsplice.bench import kernels as bench_kernels


def test_kernel_table_times_every_op_and_every_linear_weight_format_against_its_reference(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert bench_kernels.main(["--model", "smollm2-135m", "--tokens", "64", "--repeats", "1", "--threads", "1",
                               "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["op"] for r in rows} == {"rotate_and_move_", "rerotate_", "decode_attention", "chunk_attention", "linear"}
    linear = [r for r in rows if r["op"] == "linear"]
    assert {r["backend"] for r in linear} == {"torch", "bf16", "_weight_int8pack_mm", "int8 (kvsplice)"}
    assert len(linear) == 5 * len(bench_kernels.LINEAR_ROWS) * 4, "five layers, each row count, four formats"
    assert all(r["median_us"] > 0 and (r["x_torch"] is None) == (r["backend"] == "torch") for r in linear)
    decode = {r["backend"] for r in rows if r["op"] == "decode_attention"}
    assert decode == {"torch", "torch sdpa", "torch bmm"}, "the CPU kernel beside the torch reference's bmm"
    assert "lm_head 576->49152 x9" in capsys.readouterr().out
    assert bench_kernels.main(["--model", "smollm2-135m", "--tokens", "64", "--repeats", "1", "--no-linear",
                               "--json", str(out)]) == 0
    assert all(r["op"] != "linear" for r in json.loads(out.read_text())["rows"])
