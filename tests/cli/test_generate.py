"""`mumo caption`, `ask`, `generate` (mumo.cli.generate) on the tiny CoCa and GPT of the captioner_runs
fixture (conftest)."""

from typer.testing import CliRunner

from mumo.cli import app

runner = CliRunner()


def test_caption_ask_and_generate(invoke, captioner_runs, shapes_dir):
    image = str(shapes_dir / "images" / "000000.png")
    vqa, gpt = str(captioner_runs / "vqa"), str(captioner_runs / "gpt")
    lines = invoke("caption", vqa, image, image, "--beam", "3", "--max-new-tokens", "5").output.splitlines()
    assert len(lines) == 2 and all(line.startswith(image + "\t") for line in lines)
    assert lines[0] == lines[1]  # beam search is deterministic
    sampled = invoke("caption", vqa, image, "--top-p", "0.9", "--seed", "1", "--max-new-tokens", "5").output
    assert sampled.startswith(image + "\t")
    assert len(invoke("ask", vqa, image, "what colour is the star?").output.splitlines()) == 1
    int8 = invoke("caption", vqa, image, "--precision", "int8", "--max-new-tokens", "5").output
    assert int8.startswith(image + "\t") and len(int8.splitlines()) == 1
    out = invoke("generate", gpt, "--prompt", "a small red", "--prompt", "there is", "--max-new-tokens", "4")
    # each prompt, then its continuation (an untrained model's may hold any character, newlines included)
    assert out.output.startswith("a small red") and "\nthere is" in out.output


def test_generation_verbs_refuse_the_wrong_model(captioner_runs, run_dir, shapes_dir):
    image = str(shapes_dir / "images" / "000000.png")
    for args, message in [
        (("caption", str(run_dir), image), "does not generate text"),
        (("generate", str(captioner_runs / "vqa"), "--prompt", "x"), "image captioner"),
        (("caption", str(captioner_runs / "gpt"), image), "text-only"),
        (("caption", str(captioner_runs / "vqa"), image, "--beam", "2", "--top-k", "3"), "not both"),
        (("caption", str(captioner_runs / "vqa"), image, "--precision", "int4"), "'int4' is not one of"),
    ]:
        result = runner.invoke(app, list(args))
        assert result.exit_code != 0 and message in str(result.exception) + result.output, args
