"""The exported card's metadata found offline: which names are hub models, their licenses and languages."""

from speckd_bench.publish.card_data import hub_id, model_languages, model_license, source_model


def test_hub_ids_are_the_built_in_teachers_source_or_valid_repo_ids(tmp_path):
    assert hub_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    local = tmp_path / "org" / "model"
    local.mkdir(parents=True)
    assert hub_id(str(local)) is None and hub_id("tiny-random") is None and hub_id("a/b/c") is None


def test_the_student_comes_from_its_teacher_when_cut_from_it():
    assert source_model({"teacher": "org/big", "student": "layers:2"}) == "org/big"
    assert source_model({"teacher": "org/big", "student": "org/small"}) == "org/small"


def test_licenses_come_from_a_local_models_card_or_the_gguf_metadata(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# a model\n")
    assert model_license(str(tmp_path)) == "mit"
    assert model_license(str(tmp_path / "nothing")) is None
    assert model_license("nobody/not-in-the-cache") is None
    assert model_license("smollm2-135m-instruct") == "apache-2.0"


def test_languages_come_from_a_local_models_card_or_the_gguf_metadata(tmp_path):
    (tmp_path / "README.md").write_text("---\nlanguage: [de, en]\n---\n# a model\n")
    assert model_languages(str(tmp_path)) == ["de", "en"]
    (tmp_path / "README.md").write_text("---\nlanguage: fr\n---\n# a model\n")
    assert model_languages(str(tmp_path)) == ["fr"]
    assert model_languages(str(tmp_path / "nothing")) == [] and model_languages("tiny-random") == []
    assert model_languages("smollm2-135m-instruct") == ["en"]
