"""`python -m utils.bench` times the book's solution against the built-in and prints the ratio table."""

from utils.bench import main


def test_bench_command_prints_the_ratio_table(capsys):
    assert main(["softmax", "--repeats", "1", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("softmax"))
    book, builtin, ratio = row.split()[-3:]
    book_ms, builtin_ms = float(book.removesuffix("ms")), float(builtin.removesuffix("ms"))
    assert "(4096, 4096)" in row and book_ms > 0 and builtin_ms > 0
    assert abs(float(ratio.removesuffix("x")) - book_ms / builtin_ms) < 0.02 * book_ms / builtin_ms + 0.01


def test_bench_drives_module_and_optimizer_classes(capsys):
    assert main(["RMSNorm", "SGD", "clip_grad_norm_", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "(8, 1024, 768)" in next(line for line in out.splitlines() if line.startswith("RMSNorm"))
    assert "8 x (1024, 1024)" in next(line for line in out.splitlines() if line.startswith("SGD"))
    assert "8 x (1024, 1024)" in next(line for line in out.splitlines() if line.startswith("clip_grad_norm_"))
