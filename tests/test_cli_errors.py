"""Every user mistake of ``emorl fit | test | predict`` ends in one line, ``emorl <command>: error: ...``,
with exit status 2 (issue 18, item 2); ``--verbose`` adds the traceback; the accelerator guard (item 4).

The cases run in this process (``emorl.cli.main``), on one tiny corpus, so the file takes seconds."""

import pytest

from emorl import cli_checks
from emorl.cli import main
from emorl.errors import EmorlError
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import REPO

ACOUSTIC = str(REPO / "configs/demo/acoustic.yaml")
SFT = str(REPO / "configs/demo/tiny_sft_ir.yaml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return str(make_tiny_corpus(tmp_path_factory.mktemp("c"), per_speaker_label=1).root)


def _error_lines(capsys, argv):
    with pytest.raises(SystemExit) as done:
        main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return done.value.code, lines


CASES = {  # name: (argv after the corpus options, the line's start after "emorl <command>: error: ")
    "a corpus folder that is not prepared": (
        ["test", "--config", ACOUSTIC, "--data.data_dir", "{tmp}/nothing"],
        "{tmp}/nothing is not a prepared corpus (no corpus.json); run `emorl data prepare` first"),
    "a checkpoint that does not exist": (
        ["test", "--config", ACOUSTIC, "--ckpt_path", "{tmp}/gone.ckpt"],
        "--ckpt_path {tmp}/gone.ckpt does not exist, give a checkpoint file"),
    "a zoo model that is not on this machine (the paper's config)": (
        ["fit", "--config", SFT, "--model.init_args.model", "qwen2-audio-7b-instruct"],
        "model 'qwen2-audio-7b-instruct' (Qwen/Qwen2-Audio-7B-Instruct) is not on this machine (looked in "
        "$EMORL_MODELS ({tmp}/models) and the Hugging Face cache), put it in $EMORL_MODELS/qwen2-audio-7b-instruct"),
    "a model that is neither a zoo name nor a folder": (
        ["fit", "--config", SFT, "--model.init_args.model", "nomodel-7b"],
        "'nomodel-7b' is not a model of the zoo ("),
    "a model folder that does not exist": (
        ["fit", "--config", SFT, "--model.init_args.model", "{tmp}/moved"],
        "model folder {tmp}/moved does not exist, give the model's folder or zoo name (a moved run: "
        "--model.init_args.model NEW_FOLDER overrides its checkpoint's)"),
    "a value of the wrong type": (
        ["fit", "--config", ACOUSTIC, "--trainer.max_epochs", "abc"],
        "--trainer.max_epochs abc: expected int, see `emorl fit --help` for the option"),
    "a misspelled option of the model": (
        ["fit", "--config", ACOUSTIC, "--model.init_args.hiden_dim", "3"],
        "--model: Problem with given class_path 'emorl.models.acoustic.AcousticBaseline': Option 'hiden_dim' is "
        "not accepted, `emorl fit --model.help CLASS` lists a class's options"),
    "a value outside the choices": (
        ["fit", "--config", ACOUSTIC, "--data.duration_mode", "cut"],
        "--data.duration_mode: Expected a typing.Literal['skip', 'truncate', 'keep']. Got value: cut"),
    "clips to predict that do not exist": (
        ["predict", "--config", ACOUSTIC, "--data.predict_path", "{tmp}/my_clips", "--trainer.enable_progress_bar",
         "false"],
        "predict_path {tmp}/my_clips does not exist"),
    "no config at all": (
        ["fit"], "fit.model not given, pass --config X.yaml (the shipped ones: configs/, docs/configs.md)"),
    "an unknown option": (
        ["fit", "--config", ACOUSTIC, "--nonsense", "1"], "unrecognized arguments: --nonsense 1, see `emorl fit --help`"),
    "a config that does not exist": (
        ["fit", "--config", "{tmp}/nope.yaml"],
        "--config {tmp}/nope.yaml: no such file, give the path of a YAML config"),
    "GPUs asked for where none is visible": (
        ["fit", "--config", ACOUSTIC, "--trainer.accelerator", "gpu"],
        "trainer.accelerator is gpu but no GPU is visible on this machine"),
    "auto with two processes and no GPU": (
        ["fit", "--config", ACOUSTIC, "--trainer.accelerator", "auto", "--trainer.devices", "2"],
        "no GPU is visible, so trainer.accelerator auto would start 2 CPU processes (num_nodes x devices), "
        "pass --trainer.accelerator cpu to mean that, or --trainer.devices 1"),
    "auto with two nodes": (
        ["fit", "--config", ACOUSTIC, "--trainer.accelerator", "auto", "--trainer.num_nodes", "2"],
        "no GPU is visible, so trainer.accelerator auto would start 2 CPU processes"),
}


@pytest.mark.skipif(cli_checks.visible_gpus() > 0, reason="the GPU cases need a machine without GPUs")
def test_each_user_mistake_is_one_line_with_status_2(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMORL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("EMORL_TRACEBACK", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the checkout
    for name, (argv, start) in CASES.items():
        argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
        if "--data.data_dir" not in argv:
            argv += ["--data.data_dir", corpus]
        code, lines = _error_lines(capsys, [*argv, "--trainer.logger", "false"])
        expected = f"emorl {argv[0]}: error: " + start.replace("{tmp}", str(tmp_path))
        assert code == 2 and len(lines) == 1, (name, lines)
        assert lines[0].startswith(expected), (name, lines[0], expected)
    assert not list(tmp_path.glob("runs")) and not (tmp_path / "config.yaml").exists()


def test_verbose_shows_the_traceback_and_an_internal_error_keeps_it(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMORL_TRACEBACK", "0")  # --verbose sets it to 1: unset again after the test
    argv = ["test", "--config", ACOUSTIC, "--data.data_dir", corpus, "--ckpt_path", str(tmp_path / "gone.ckpt"),
            "--trainer.logger", "false"]
    code, lines = _error_lines(capsys, ["--verbose", *argv])
    assert code == 2 and lines[0].startswith("Traceback (most recent call last)") and len(lines) > 3
    assert lines[-1].startswith("emorl test: error: --ckpt_path")
    from emorl.errors import one_line

    assert one_line(ValueError("X is sharded; consolidate it first:\n    python -m tool X")) == (
        "X is sharded; consolidate it first: python -m tool X")  # the what-to-do of a second line is kept
    monkeypatch.setenv("EMORL_TRACEBACK", "0")
    with pytest.raises(ZeroDivisionError):  # a bug is not a user error: its traceback stays
        from emorl.errors import find_user_error, user_error_types

        try:
            1 / 0
        except ZeroDivisionError as err:
            assert find_user_error(err, user_error_types()) is None
            raise


def test_a_typed_option_that_identifies_the_model_is_refused_against_a_checkpoint():
    saved = {"model": "/old/tiny", "prompt_format": "esr", "dtype": "float32", "lora": None}
    wins, said = cli_checks.portable_overrides({"model": "/new/tiny", "dtype": "bfloat16", "lora": None}, saved)
    assert wins == {"model": "/new/tiny", "dtype": "bfloat16"}
    assert said == ["model '/new/tiny' (checkpoint: '/old/tiny')", "dtype 'bfloat16' (checkpoint: 'float32')"]
    with pytest.raises(EmorlError, match=r"--model.init_args.prompt_format 'ir' differs from the checkpoint's 'esr'"):
        cli_checks.portable_overrides({"prompt_format": "ir"}, saved)


def test_the_command_line_pieces_the_checks_read():
    argv = ["test", "--model.init_args.model", "X", "--model.init_args.dtype=float32", "--model.lr", "1",
            "--model.init_args.model", "Y", "--model.class_path", "Z", "--trainer.devices", "2"]
    assert cli_checks.typed_model_args(argv) == ["model", "dtype", "lr"]
    assert cli_checks.option_value(argv, "--model.init_args.model") == "Y"
    assert [cli_checks.devices_per_node(d) for d in (None, "auto", 1, "4", -1, "0,1", [0, 1, 2])] == [1, 1, 1, 4, 2, 2, 3]
    assert cli_checks.process_count({"num_nodes": 2, "devices": 4}) == 8
    cli_checks.check_accelerator({"accelerator": "cpu", "devices": 8}, gpus_visible=0)  # said explicitly: allowed
    cli_checks.check_accelerator({"accelerator": "gpu", "devices": 8}, gpus_visible=8)
    assert cli_checks.run_name_for_model("sft_ir", "/models/qwen2-audio-7b-instruct/") == "sft_ir-qwen2-audio-7b-instruct"
    assert cli_checks.run_name_for_model("sft_ir-tiny", "/elsewhere/tiny") == "sft_ir-tiny"
    # the same model by another path is not another model: the run keeps the config's name
    config = ["test", "--config", SFT]  # model: data/models/tiny-qwen2-audio
    assert cli_checks.config_files_value(config, ("model", "init_args", "model")) == "data/models/tiny-qwen2-audio"
    typed = [*config, "--model.init_args.model", "/x/tiny-qwen2-audio"]
    assert cli_checks.typed_model_name(typed, {"model": "/x/tiny-qwen2-audio"}) is None
    assert cli_checks.same_model_name("qwen2-audio-7b-instruct", "/models/Qwen2-Audio-7B-Instruct/")
    assert not cli_checks.same_model_name("qwen2-audio-7b-instruct", "/models/qwen2.5-omni-7b-thinker")
    typed = [*config, "--model.init_args.model", "/x/qwen2-audio-7b-instruct"]
    assert cli_checks.typed_model_name(typed, {"model": "/x/qwen2-audio-7b-instruct"}) == "/x/qwen2-audio-7b-instruct"


def test_a_base_model_named_through_emorl_models_is_found_on_any_machine(tmp_path, monkeypatch):
    from emorl import zoo

    (tmp_path / "here" / "tiny").mkdir(parents=True)
    (tmp_path / "here" / "tiny" / "config.json").write_text("{}")
    monkeypatch.setenv("EMORL_MODELS", str(tmp_path / "here"))
    assert zoo.resolve("$EMORL_MODELS/tiny") == tmp_path / "here" / "tiny"
    monkeypatch.setenv("EMORL_MODELS", str(tmp_path / "elsewhere"))
    with pytest.raises(zoo.ModelNotFoundError, match=f"model folder {tmp_path}/elsewhere/tiny does not exist"):
        zoo.resolve("$EMORL_MODELS/tiny")
