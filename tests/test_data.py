"""Data: every format, the checks on bad input, subsets, the synthetic set, tokenization and batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emodist import data
from emodist.config import DataConfig
from emodist.data import tables
from emodist.runtime import files
from emodist.runtime.errors import UsageError

GOEMOTIONS_LABELS = ["admiration", "anger", "joy", "neutral"]


def write_goemotions(directory: Path, rows: dict[str, list[str]] | None = None) -> Path:
    """A small data set in the original GoEmotions layout (text, label ids, comment id)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "emotions.txt").write_text("\n".join(GOEMOTIONS_LABELS))
    rows = rows or {
        "train": ["I love it\t0,2\ta1", "So angry right now\t1\ta2", "ok then\t3\ta3"],
        "dev": ["What a joy\t2\tb1", "whatever\t3\tb2"],
        "test": ["Furious!\t1\tc1", "Great work\t0\tc2"],
    }
    for split, lines in rows.items():
        (directory / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def load_dir(directory: Path, **kwargs) -> data.EmotionData:
    return data.load(DataConfig(data_dir=str(directory), **{"dataset": "auto", **kwargs}), seed=0)


def test_goemotions_layout(tmp_path):
    loaded = load_dir(write_goemotions(tmp_path / "ge"))
    assert loaded.name == "goemotions"
    assert loaded.labels == GOEMOTIONS_LABELS
    train = loaded.splits["train"]
    assert train.texts == ["I love it", "So angry right now", "ok then"]
    np.testing.assert_array_equal(train.targets, [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    assert train.targets.dtype == np.float32


@pytest.mark.parametrize(("line", "message"), [
    ("Hello\t4\tx", r"dev.tsv:3: label id 4 is out of range: emotions.txt names 4 labels \(ids 0-3\)"),
    ("Hello\tjoy\tx", r"dev.tsv:3: label id 'joy' is not a label id: ids are whole numbers 0-3, comma-separated"),
    ("Hello\t\u00b2\tx", r"dev.tsv:3: label id '\u00b2' is not a label id: ids are whole numbers 0-3"),
    ("Hello\t-1\tx", r"dev.tsv:3: label id '-1' is not a label id: ids are whole numbers 0-3"),
    ("Hello\t1,\tx", r"dev.tsv:3: label id '' is not a label id"),
    ("Hello\t\tx", r"dev.tsv:3: no label ids in the second column: every GoEmotions example has at least one"),
    ("Hello", r"dev.tsv:3: expected 3 tab-separated columns \(text, label ids, id\), got 1"),
    ("  \t1\tx", r"dev.tsv:3: empty text"),
])
def test_goemotions_bad_rows_name_file_and_line(tmp_path, line, message):
    directory = write_goemotions(tmp_path / "ge")
    with (directory / "dev.tsv").open("a") as handle:
        handle.write(line + "\n")
    with pytest.raises(UsageError, match=message):
        load_dir(directory)


def test_goemotions_blank_lines_are_skipped_as_in_jsonl(tmp_path):
    """A trailing blank line in a .tsv was refused as a row of 1 column, while .jsonl skips blank lines."""
    directory = write_goemotions(tmp_path / "ge")
    rows = (directory / "dev.tsv").read_text()
    (directory / "dev.tsv").write_text(rows.replace("\n", "\n\n", 1) + "\n  \n")
    assert load_dir(directory).splits["dev"].texts == load_dir(write_goemotions(tmp_path / "plain")).splits["dev"].texts


def test_missing_and_empty_files(tmp_path):
    directory = write_goemotions(tmp_path / "ge")
    (directory / "test.tsv").unlink()
    with pytest.raises(UsageError, match=r"test.tsv: missing file"):
        load_dir(directory)
    (directory / "test.tsv").write_text("")
    with pytest.raises(UsageError, match=r"test.tsv: no examples \(the split is empty\)"):
        load_dir(directory)


@pytest.mark.parametrize(("names", "message"), [
    ("admiration\njoy\nanger\njoy\n", r"emotions.txt:4: label 'joy' is listed a second time \(first at line 2\)"),
    ("admiration\n\njoy\n", r"emotions.txt:2: blank line between label names: a label's id is its line"),
    ("\n\n", r"emotions.txt: no label names \(one per line\)"),
])
def test_a_label_file_lists_each_name_once_in_id_order(tmp_path, names, message):
    """28 names with one twice used to become 27 keys in the scores, thresholds and label2id."""
    directory = write_goemotions(tmp_path / "ge")
    (directory / "emotions.txt").write_text(names)
    with pytest.raises(UsageError, match=message):
        load_dir(directory)


def write_csv(directory: Path, content: str = "text,labels\nyay,joy\n") -> Path:
    """A CSV data set: each split's file holds `content`."""
    directory.mkdir()
    for split in ("train", "dev", "test"):
        (directory / f"{split}.csv").write_text(content)
    return directory


def write_jsonl(directory: Path, line: str = '{"text": "yay", "labels": ["joy"]}') -> Path:
    """A JSON-lines data set of one example per split."""
    directory.mkdir()
    for split in ("train", "dev", "test"):
        (directory / f"{split}.jsonl").write_text(line + "\n")
    return directory


def test_a_labels_txt_with_a_name_twice_is_refused(tmp_path):
    directory = write_jsonl(tmp_path / "j")
    (directory / "labels.txt").write_text("joy\nanger\njoy\n")
    with pytest.raises(UsageError, match=r"labels.txt:3: label 'joy' is listed a second time \(first at line 1\)"):
        load_dir(directory)


def test_a_csv_with_a_long_text_loads_and_a_short_row_names_its_column(tmp_path):
    directory = tmp_path / "c"
    directory.mkdir()
    long_text = "so happy " * 30000  # 270 KB: over csv's default field limit of 128 KiB
    for split in ("train", "dev", "test"):
        (directory / f"{split}.csv").write_text(f'text,labels\n"{long_text}",joy\nfine,joy\n')
    assert load_dir(directory).splits["train"].texts[0] == long_text
    (directory / "dev.csv").write_text("text,labels\nyay,joy\nno labels here\n")
    with pytest.raises(UsageError, match=r"dev.csv:3: no value in column 'labels': the row has fewer fields than"):
        load_dir(directory)


@pytest.mark.parametrize(("content", "message"), [
    # DictReader keeps the last column of a name: the run would have trained on the ids
    ("text,labels,text\nso glad,joy,id-1\n", "{dev}:1: the header names 'text' more than once: rename all but one, "
     "or remove the extra columns"),
    # DictReader files the fields beyond the header under None: 'really' would have been the label, 'joy' lost
    ("text,labels\nyay,joy\nI love it, really,joy\n", "{dev}:3: 2 columns in the header, 3 fields here: quote a "
     'text that holds a comma, e.g. "I love it, really"'),
    ("text\tlabels\nyay\tjoy\n", "{dev}:1: the header is one column, 'text\\tlabels': its fields are separated by "
     "tabs, and a .csv file's by commas: save it comma-separated"),
    ("text;labels\nyay;joy\n", "{dev}:1: the header is one column, 'text;labels': its fields are separated by "
     "semicolons, and a .csv file's by commas: save it comma-separated"),
    # read leniently, the open quote took lines 4-6 into row 3's id: 2 dev texts, no word (found by a new user)
    ('text,labels,id\nyay,joy,1\nmeh,joy,"r3\nfine,joy,4\nok,joy,5\ngood,joy,6\n', "{dev}:3: not valid CSV (unexpected end "
     'of data) (the row runs from line 3 to 6: is a quote (") there left open?): ' + tables.QUOTES),
    # the quote in the text column closed on line 4: the refusal named line 3 and a short row
    ('text,labels\nyay,joy\n"meh,joy\nfine,joy\n"ok",joy\n', "{dev}:3: not valid CSV (',' expected after '\"') (the row "
     'runs from line 3 to 5: is a quote (") there left open?): ' + tables.QUOTES),
    ('text,labels\nyay,joy\n"so glad, really" ,joy\n', "{dev}:3: not valid CSV (',' expected after '\"'): " + tables.QUOTES),
    ('text,labels\nyay,joy\n"meh\nfine,joy\n"\n', "{dev}:3: no value in column 'labels': the row has fewer fields than the "
     'header (the row runs from line 3 to 5: is a quote (") there left open?)'),
    ('text,labels\nyay,joy\n \n', "{dev}:3: no value in column 'labels': the row has fewer fields than the header"),
])
def test_a_csv_whose_columns_do_not_line_up_is_refused_naming_the_line(tmp_path, content, message):
    directory = write_csv(tmp_path / "c")
    (directory / "dev.csv").write_text(content)
    assert refusal(directory) == message.format(dev=directory / "dev.csv")


def test_a_quoted_text_over_several_lines_is_named_by_its_first_line(tmp_path):
    directory = write_csv(tmp_path / "c", 'text,labels\n\n"so\nvery\nglad",joy\n\n"yay",joy\n')
    (directory / "labels.txt").write_text("joy\n")
    assert load_dir(directory).splits["dev"].texts == ["so\nvery\nglad", "yay"]
    (directory / "dev.csv").write_text('text,labels\n\n"so\nvery\nglad",nosuch\n')
    with pytest.raises(UsageError, match=r"dev.csv:3: unknown label 'nosuch'"):  # where it starts, not line 5
        load_dir(directory)


def test_columns_named_twice_that_are_not_read_are_no_matter(tmp_path):
    directory = tmp_path / "c"
    directory.mkdir()
    for split in ("train", "dev", "test"):  # a spreadsheet's trailing empty columns, an id kept twice
        (directory / f"{split}.csv").write_text("id,text,labels,id,,\n1,yay,joy,1,,\n")
    assert load_dir(directory).splits["train"].texts == ["yay"]


def test_half_a_surrogate_pair_in_a_jsonl_text_or_label_is_refused_naming_the_line(tmp_path):
    """json reads "\\ud800" as a str that UTF-8 cannot encode: the splits' fingerprint failed, an internal error."""
    directory = write_jsonl(tmp_path / "j")
    dev = directory / "dev.jsonl"
    dev.write_text('{"text": "yay", "labels": ["joy"]}\n{"text": "bad \\ud800 x", "labels": ["joy"]}\n')
    assert refusal(directory) == (f"{dev}:2: the text column 'text' holds \\ud800, half of a UTF-16 surrogate pair, "
                                  "which is no character on its own: write the character itself, or both halves of "
                                  "its escape (\\ud83d\\ude00 is one emoji)")
    dev.write_text('{"text": "yay", "labels": ["joy", "s\\udc80d"]}\n')
    assert refusal(directory).startswith(f"{dev}:1: a label name holds \\udc80, half of a UTF-16 surrogate pair")
    dev.write_text('{"text": "so glad \\ud83d\\ude00", "labels": ["joy"]}\n')  # a whole pair is one emoji
    assert load_dir(directory).splits["dev"].texts == ["so glad \U0001f600"]


def test_a_jsonl_key_given_twice_is_refused_as_a_csv_column_named_twice_is(tmp_path):
    directory = write_jsonl(tmp_path / "j")
    (directory / "dev.jsonl").write_text('{"text": "yay", "labels": ["joy"]}\n{"text": "grr", "labels": ["joy"], '
                                         '"labels": ["anger"]}\n')  # json kept the last, unsaid
    assert refusal(directory) == f"{directory / 'dev.jsonl'}:2: the key 'labels' is given twice: keep one"


def test_a_jsonl_null_is_named_as_null(tmp_path):
    directory = write_jsonl(tmp_path / "j")
    (directory / "dev.jsonl").write_text('{"text": "yay", "labels": null}\n')
    with pytest.raises(UsageError, match=r"dev.jsonl:1: no value in column 'labels': it is null$"):
        load_dir(directory)


def test_a_jsonl_text_that_is_not_a_string_names_its_line(tmp_path):
    directory = write_jsonl(tmp_path / "j")
    (directory / "dev.jsonl").write_text('{"text": "yay", "labels": ["joy"]}\n{"text": 42, "labels": ["joy"]}\n')
    with pytest.raises(UsageError, match=r"dev.jsonl:2: the text column 'text' holds 42, not a string"):
        load_dir(directory)


def test_undecodable_file_names_the_line(tmp_path):
    directory = write_goemotions(tmp_path / "ge")
    (directory / "train.tsv").write_bytes(b"fine\t0\ta\nbad \xff\xfe text\t1\tb\n")
    with pytest.raises(UsageError, match=r"train.tsv:2: not UTF-8"):
        load_dir(directory)


def test_unknown_layout_says_what_it_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match="no known data layout: expected GoEmotions"):
        load_dir(tmp_path)


SEMEVAL_HEADER = "ID\tTweet\tanger\tanticipation\tdisgust\tfear\tjoy\tlove\toptimism\tpessimism\tsadness\tsurprise\ttrust"


def write_semeval(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = {"train": ["2017-En-1\tSo happy today\t0\t0\t0\t0\t1\t0\t1\t0\t0\t0\t0",
                      "2017-En-2\tnothing at all\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0"],
            "dev": ["2018-En-1\tI am scared\t0\t0\t0\t1\t0\t0\t0\t0\t0\t0\t0"],
            "test-gold": ["2018-En-9\tugh\t1\t0\t1\t0\t0\t0\t0\t0\t0\t0\t0"]}
    for split, lines in rows.items():
        (directory / f"2018-E-c-En-{split}.txt").write_text("\n".join([SEMEVAL_HEADER, *lines]) + "\n")
    return directory


def test_semeval_layout(tmp_path):
    loaded = load_dir(write_semeval(tmp_path / "se"))
    assert loaded.name == "semeval2018"
    assert len(loaded.labels) == 11 and loaded.labels[4] == "joy"
    train = loaded.splits["train"]
    assert train.targets[0].nonzero()[0].tolist() == [4, 6]  # joy, optimism
    assert train.targets[1].sum() == 0  # a tweet with no emotion is valid here


def test_semeval_unlabeled_file_is_refused(tmp_path):
    directory = write_semeval(tmp_path / "se")
    with (directory / "2018-E-c-En-dev.txt").open("a") as handle:
        handle.write("2018-En-5\thm\tNONE\tNONE\tNONE\tNONE\tNONE\tNONE\tNONE\tNONE\tNONE\tNONE\tNONE\n")
    with pytest.raises(UsageError, match=r"2018-E-c-En-dev.txt:3: emotion columns must be 0 or 1"):
        load_dir(directory)


def test_jsonl_and_csv_layouts(tmp_path):
    jsonl = tmp_path / "j"
    jsonl.mkdir()
    for split in ("train", "validation", "test"):
        rows = [{"text": "yay", "labels": ["joy"]}, {"text": "grr and wow", "labels": ["anger", "surprise"]}]
        (jsonl / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    loaded = load_dir(jsonl)
    assert loaded.labels == ["anger", "joy", "surprise"]  # sorted train labels
    np.testing.assert_array_equal(loaded.splits["dev"].targets, [[0, 1, 0], [1, 0, 1]])

    csv_dir = tmp_path / "c"
    csv_dir.mkdir()
    (csv_dir / "labels.txt").write_text("surprise\njoy\nanger\n")
    for split in ("train", "dev", "test"):
        (csv_dir / f"{split}.csv").write_text('body,tags\n"yay, really",joy\ngrr,"anger;surprise"\n')
    loaded = load_dir(csv_dir, text_column="body", label_column="tags")
    assert loaded.labels == ["surprise", "joy", "anger"]  # labels.txt fixes the order
    assert loaded.splits["train"].texts[0] == "yay, really"
    np.testing.assert_array_equal(loaded.splits["train"].targets, [[0, 1, 0], [1, 0, 1]])


def test_labels_no_train_example_carries_are_named(tmp_path):
    """A label of labels.txt that only dev and test carry was trained on without a word."""
    directory = tmp_path / "c"
    directory.mkdir()
    (directory / "labels.txt").write_text("joy\nanger\ndisgust\n")
    (directory / "train.csv").write_text("text,labels\nyay,joy\ngrr,anger\n")
    for split in ("dev", "test"):
        (directory / f"{split}.csv").write_text("text,labels\nyay,joy\newww,disgust\ngrr,anger\n")
    loaded = load_dir(directory)
    assert data.untrained_labels(loaded) == ["disgust"]
    assert data.label_warnings(loaded) == [
        "1 of 3 labels have no train examples (disgust): the model cannot learn them, and they score 0 F1; add train "
        "examples of them, or leave them out of the label set"]
    (directory / "train.csv").write_text("text,labels\nyay,joy\ngrr,anger\newww,disgust\n")
    assert data.label_warnings(load_dir(directory)) == []


def test_label_names_that_differ_only_in_case_are_warned_of(tmp_path):
    """A one-off `Anger` in train became a label of its own, without a word; test never carries it."""
    directory = tmp_path / "c"
    directory.mkdir()
    (directory / "train.csv").write_text("text,labels\nyay,joy\ngrr,anger\nugh,Anger\n")
    for split in ("dev", "test"):
        (directory / f"{split}.csv").write_text("text,labels\nyay,joy\ngrr,anger\n")
    assert data.label_warnings(load_dir(directory)) == [
        "1 of 3 labels have no test examples (Anger): their test F1 is 0 whatever the model does, which lowers test "
        "macro-F1",
        "labels 'Anger' and 'anger' differ only in case or Unicode form: each is a label of its own; if one is a "
        "typo, write it as the other in the data"]


def test_labels_one_unicode_form_apart_and_texts_taught_two_answers_are_warned_of(tmp_path):
    """"café" typed two ways (é, or e and a combining accent) made two labels that look the same; a train text
    with two label sets teaches both; neither was said (found by a new user)."""
    directory = tmp_path / "j"
    directory.mkdir()
    rows = [("so glad", ["café"]), ("so glad", ["sad"]), ("meh", ["cafe\u0301"]), ("grr", ["sad"])]
    for split in ("train", "dev", "test"):
        (directory / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "labels": ls}) + "\n" for t, ls in rows))
    assert data.label_warnings(load_dir(directory)) == [
        "labels 'cafe\u0301' (cafe\\u0301) and 'caf\xe9' (caf\\xe9) differ only in case or Unicode form: each is a label of its own; if one "
        "is a typo, write it as the other in the data",
        "1 train texts (33.3%) appear more than once with different labels: the model is taught both answers; merge "
        "their labels, or keep one of each"]


def test_two_files_for_one_split_or_two_formats_are_refused(tmp_path):
    """dev.csv was read and validation.csv beside it ignored; train.jsonl was chosen over a whole CSV set."""
    directory = tmp_path / "c"
    directory.mkdir()
    for split in ("train", "dev", "validation", "test"):
        (directory / f"{split}.csv").write_text("text,labels\nyay,joy\n")
    assert refusal(directory) == f"{directory}: dev.csv and validation.csv are both a dev split: keep one"
    (directory / "validation.csv").unlink()
    (directory / "train.jsonl").write_text('{"text": "yay", "labels": ["joy"]}\n')  # a CSV set, one JSONL file
    assert refusal(directory).startswith(f"data directory {directory}: holds more than one data set (train.jsonl "
                                         "(jsonl), train.csv (csv))")
    assert load_dir(directory, dataset="csv").splits["train"].texts == ["yay"]


def test_a_data_dir_of_another_layout_than_the_data_set_names_it(tmp_path):
    """data.data_dir set in a config file or override keeps data.dataset=goemotions (only --data-dir switches to
    auto): a CSV directory was refused as missing emotions.txt."""
    directory = tmp_path / "c"
    directory.mkdir()
    for split in ("train", "dev", "test"):
        (directory / f"{split}.csv").write_text("text,labels\nyay,joy\n")
    with pytest.raises(UsageError) as refused:
        data.load(DataConfig(data_dir=str(directory)), seed=0)
    assert str(refused.value) == (f"data.dataset=goemotions, but {directory} holds the csv layout: set data.dataset=csv "
                                  "(or auto), or pass it as --data-dir, which detects the layout")
    assert data.load(DataConfig(data_dir=str(directory), dataset="csv"), seed=0).labels == ["joy"]
    write_goemotions(directory)  # GoEmotions' files beside: the named layout is still there to read
    assert data.load(DataConfig(data_dir=str(directory), dataset="csv"), seed=0).labels == ["joy"]


def test_table_errors_name_file_and_line(tmp_path):
    directory = write_csv(tmp_path / "c")
    (directory / "test.csv").write_text("text,labels\nyay,joy\nhmm,confusion\n")
    with pytest.raises(UsageError, match=r"test.csv:3: unknown label 'confusion': not in the labels of train.csv"):
        load_dir(directory)
    (directory / "dev.csv").write_text("sentence,labels\nyay,joy\n")  # named on line 2, without the columns
    assert refusal(directory) == (f"{directory / 'dev.csv'}:1: no column 'text' in the header (its columns: "
                                  "['sentence', 'labels']): name the columns in the first line, or set "
                                  "data.text_column / data.label_column")
    (directory / "dev.csv").write_text("Text,Labels\nyay,joy\n")
    assert refusal(directory).endswith(": did you mean 'Text'? name the columns in the first line, or set "
                                       "data.text_column / data.label_column")
    (directory / "dev.csv").write_text("text,labels\n")  # a header alone: "no labels in column 'labels'" for train
    assert refusal(directory) == f"{directory / 'dev.csv'}: no examples (the split is empty)"
    (directory / "dev.csv").write_text("")
    assert refusal(directory) == (f"{directory / 'dev.csv'}:1: no header: a .csv split's first line names its "
                                  "columns (e.g. text,labels)")
    for bom in (True, False):  # UTF-16: "not UTF-8 (invalid start byte)", or without its mark, "no column 'text'"
        (directory / "dev.csv").write_bytes("text,labels\nyay,joy\n".encode("utf-16" if bom else "utf-16-le"))
        assert refusal(directory) == (f"{directory / 'dev.csv'}:1: UTF-16 text, not UTF-8 (a NUL at every other "
                                      f"byte): convert it first, e.g. iconv -f utf-16 -t utf-8 {directory / 'dev.csv'}")


def test_subset_is_seeded_and_keeps_order(tmp_path):
    split = data.synthetic(0).splits["train"]
    a, b = split.subset(100, seed=7), split.subset(100, seed=7)
    assert a.texts == b.texts and len(a) == 100
    assert split.subset(100, seed=8).texts != a.texts
    positions = [split.texts.index(t) for t in a.texts[:20]]
    assert positions == sorted(positions)
    loaded = data.load(DataConfig(dataset="synthetic", max_train_examples=50, max_eval_examples=10), seed=0)
    assert [len(loaded.splits[s]) for s in data.SPLITS] == [50, 10, 10]


def test_synthetic_set_is_deterministic_multilabel_and_cued():
    first, again = data.synthetic(3), data.synthetic(3)
    assert first.splits["train"].texts == again.splits["train"].texts
    assert data.synthetic(4).splits["train"].texts != first.splits["train"].texts
    targets = first.splits["train"].targets
    assert set(targets.sum(axis=1).tolist()) == {1.0, 2.0, 3.0}
    assert (targets.sum(axis=1) > 1).mean() > 0.3
    for text, row in zip(first.splits["train"].texts, targets, strict=True):  # every label's cue word is in its text
        for label, on in zip(first.labels, row, strict=True):
            assert bool(on) == any(f" {cue} " in f" {text} " for cue in data.SYNTHETIC_CUES[label])


def test_the_synthetic_set_is_the_one_the_recorded_smoke_scores_were_measured_on():
    """README's and bench/RESULTS.md's smoke-run numbers hold for this set: a change to it shows here, and
    then those numbers are to be measured again."""
    splits = data.synthetic(0).splits
    assert {name: (len(split), data.split_fingerprint(split)) for name, split in splits.items()} == {
        "train": (1024, "c39fae0b9491e8ca500f"), "dev": (256, "485bc79a7384ed3e711a"),
        "test": (256, "b425ca13c5d0741218ad")}
    assert data.shared_with_train(splits) == {"dev": 0, "test": 0}  # 20 dev and 19 test texts were train's until 2026-12
    assert data.synthetic(0).labels == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert data.synthetic(0).name == "synthetic"
    assert data.split_fingerprint(data.synthetic().splits["train"]) == "c39fae0b9491e8ca500f"  # seed 0 by default
    assert data.split_fingerprint(data.synthetic(3).splits["dev"]) == "10bf7514e7bf69a550e2"


def test_texts_of_dev_or_test_also_in_train_are_counted_and_warned_of_beyond_one_percent():
    train = data.Split([f"text {i}" for i in range(300)], np.zeros((300, 1), dtype=np.float32))
    def split(texts):
        return data.Split(texts, np.zeros((len(texts), 1), dtype=np.float32))
    few = {"train": train, "dev": split(["text 1", *(f"new {i}" for i in range(199))]),  # 1 of 200: 0.5%
           "test": split(["text 2", "text 3", "text 3", "other"])}  # every copy counts: 3 of 4
    assert data.shared_with_train(few) == {"dev": 1, "test": 3}
    assert data.shared_warning(few, data.shared_with_train(few)) == (
        "3 of 4 test texts (75.0%) are also in train, word for word: the model trained on them, so their scores read "
        "high; keep each text in one split")
    both = {**few, "dev": split(["text 1", "text 2", *(f"new {i}" for i in range(98))])}  # 2 of 100: over 1%
    assert data.shared_warning(both, data.shared_with_train(both)).startswith(
        "2 of 100 dev texts (2.0%) and 3 of 4 test texts (75.0%) are also in train")
    fine = {**few, "test": split(["other"])}
    assert data.shared_warning(fine, data.shared_with_train(fine)) is None  # 1 dev text of 200 is within 1%
    assert data.shared_with_train({"train": train, "dev": split(["Text 1", "text 1 "]), "test": split([])}) == {
        "dev": 0, "test": 0}  # verbatim only


def test_tokenize_caches_and_keys_on_inputs(tmp_path):
    from accelerate import PartialState

    from emodist.models import smoke_tokenizer

    synthetic = data.synthetic(0)
    tokenizer = smoke_tokenizer(synthetic.splits["train"].texts)
    first = data.tokenize(synthetic, tokenizer, 16, str(tmp_path), PartialState())
    files = sorted(p.name for p in (tmp_path / "tokenized").glob("*.arrow"))
    assert len(files) == 3
    again = data.tokenize(synthetic, tokenizer, 16, str(tmp_path), PartialState())
    assert sorted(p.name for p in (tmp_path / "tokenized").glob("*.arrow")) == files  # read from the cache
    assert again["train"][0] == first["train"][0]
    data.tokenize(synthetic, tokenizer, 24, str(tmp_path), PartialState())
    assert len(list((tmp_path / "tokenized").glob("*.arrow"))) == 6  # another max_length, another key
    assert max(len(row["input_ids"]) for row in first["train"]) <= 16


def said(capsys) -> list[str]:
    """emodist's lines on stderr since the last call (datasets' progress bars left out)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("emodist:")]


def test_a_damaged_cache_file_is_tokenized_again_and_an_unusable_cache_is_one_line(tmp_path, capsys):
    """A truncated .arrow file used to fail every later run on the same data with pyarrow's ArrowInvalid, and
    one garbled in place trained on other tokens without a word."""
    from accelerate import PartialState

    from emodist.models import smoke_tokenizer

    synthetic = data.synthetic(0)
    tokenizer = smoke_tokenizer(synthetic.splits["train"].texts)
    first = data.tokenize(synthetic, tokenizer, 16, str(tmp_path), PartialState())
    [train_file] = (tmp_path / "tokenized").glob("train-*.arrow")
    cut = train_file.with_suffix(".cut")  # a new file: `first` maps the old one's pages
    cut.write_bytes(train_file.read_bytes()[:200])
    cut.replace(train_file)
    again = data.tokenize(synthetic, tokenizer, 16, str(tmp_path), PartialState())
    assert again["train"][:] == first["train"][:]
    assert said(capsys) == [f"emodist: the cached tokens {train_file} changed since they were written (they no "
                            "longer match their checksum): tokenizing again"]
    # bytes changed in place, the file as long as before: it still reads, and trained on other tokens unnoticed
    garbled = bytearray(train_file.read_bytes())
    start = garbled.find(np.array(first["train"][5]["input_ids"], dtype=np.int32).tobytes())
    garbled[start:start + 8] = np.array([7, 7], dtype=np.int32).tobytes()
    train_file.with_suffix(".cut").write_bytes(bytes(garbled))
    train_file.with_suffix(".cut").replace(train_file)
    again = data.tokenize(synthetic, tokenizer, 16, str(tmp_path), PartialState())
    assert again["train"][:] == first["train"][:]
    assert said(capsys) == [f"emodist: the cached tokens {train_file} changed since they were written (they no "
                            "longer match their checksum): tokenizing again"]
    data.tokenize(synthetic, tokenizer, 16, str(tmp_path), PartialState())  # the new file has its new checksum
    assert said(capsys) == []
    for checksum in (None, b"", b"\xff\xfe"):  # none (an older emodist's cache), empty, not text: never trusted
        train_file.with_suffix(".sha256").unlink()
        if checksum is not None:
            train_file.with_suffix(".sha256").write_bytes(checksum)
        again = data.tokenize(synthetic, tokenizer, 16, str(tmp_path), PartialState())
        assert again["train"][:] == first["train"][:]
        assert said(capsys) == [f"emodist: the cached tokens {train_file} carry no checksum (an older emodist wrote "
                                "them, or it was killed writing them): tokenizing again"]
    assert sorted(p.suffix for p in (tmp_path / "tokenized").iterdir()) == [".arrow"] * 3 + [".sha256"] * 3

    (tmp_path / "a-file").write_text("")
    with pytest.raises(UsageError, match=r"the tokenization cache .*a-file/tokenized cannot be created \(Not a "
                                         r"directory\): set data.cache_dir \(or \$EMODIST_CACHE\)"):
        data.tokenize(synthetic, tokenizer, 16, str(tmp_path / "a-file"), PartialState())


def test_collator_pads_to_a_multiple_of_eight():
    from emodist.models import smoke_tokenizer

    tokenizer = smoke_tokenizer(["a b c d e f g h i j"])
    features = [dict(tokenizer(text), labels=[1.0, 0.0]) for text in ("a b c d e f g h i j", "a")]
    batch = data.collator(tokenizer)(features)
    assert batch["input_ids"].shape == (2, 16)  # 12 tokens with [CLS]/[SEP], rounded up to 16
    assert batch["attention_mask"][1].tolist() == [1, 1, 1] + [0] * 13
    assert batch["labels"].dtype.is_floating_point and batch["labels"].tolist() == [[1, 0], [1, 0]]


# ---------------------------------------------------------------------------------------------------
# Label groupings

GOEMOTIONS_28 = ["admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
                 "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
                 "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
                 "remorse", "sadness", "surprise", "neutral"]


def write_goemotions_28(directory: Path, per_split: dict[str, int] | None = None) -> Path:
    """GoEmotions' layout with its 28 real labels: each text names its one or two emotions, so a tiny model
    can learn them (the smoke runs of the groupings train on it)."""
    rows = {}
    for split, count in (per_split or {"train": 560, "dev": 112, "test": 112}).items():
        lines = []
        for i in range(count):
            ids = [i % 28] if i % 3 else [i % 28, (i * 7 + 3) % 28]
            words = " and ".join(GOEMOTIONS_28[j] for j in sorted(set(ids)))
            lines.append(f"this one is about {words} today\t{','.join(map(str, sorted(set(ids))))}\t{split}{i}")
        rows[split] = lines
    write_goemotions(directory, rows)
    (directory / "emotions.txt").write_text("\n".join(GOEMOTIONS_28) + "\n")
    return directory


@pytest.mark.parametrize("grouping, groups", [
    ("ekman", ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]),
    ("sentiment", ["positive", "negative", "ambiguous", "neutral"]),
])
def test_a_grouping_merges_labels_into_groups(tmp_path, grouping, groups):
    directory = write_goemotions_28(tmp_path / "ge", {"train": 56, "dev": 28, "test": 28})
    fine = load_dir(directory)
    coarse = load_dir(directory, grouping=grouping)
    assert coarse.labels == groups and coarse.name == f"goemotions-{grouping}"
    _, mapping = data.GROUPINGS[grouping]
    for split in data.SPLITS:
        assert coarse.splits[split].texts == fine.splits[split].texts
        for row, text in enumerate(fine.splits[split].texts):
            has = {fine.labels[j] for j in np.flatnonzero(fine.splits[split].targets[row])}
            expected = {g for g in groups if has & set(mapping.get(g, [g]))}
            assert {groups[j] for j in np.flatnonzero(coarse.splits[split].targets[row])} == expected, text


def test_a_mapping_file_beside_the_data_wins(tmp_path):
    directory = write_goemotions_28(tmp_path / "ge", {"train": 56, "dev": 28, "test": 28})
    two = {"warm": GOEMOTIONS_28[:14], "cold": GOEMOTIONS_28[14:27]}
    (directory / "ekman_mapping.json").write_text(json.dumps(two))
    assert load_dir(directory, grouping="ekman").labels == ["warm", "cold", "neutral"]
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"all": GOEMOTIONS_28}))
    mine = load_dir(directory, grouping=str(own))
    assert mine.labels == ["all"] and mine.name == "goemotions-mine"
    assert mine.splits["train"].targets.min() == 1  # every text has one of the 28 labels, so "all"


EACH_GROUP = "each group has a name and lists one or more label names, as strings, each once"


@pytest.mark.parametrize("mapping, message", [
    ({"a": GOEMOTIONS_28[:20], "b": GOEMOTIONS_28[19:27]}, "{where}: labels in more than one group: nervousness (a, b)"),
    ({"a": GOEMOTIONS_28[:20]},
     "{where}: no group for optimism, pride, realization, relief, remorse: add them to a group"),
    ({"a": [*GOEMOTIONS_28[:27], "glee"]},
     "{where}: glee not among the goemotions labels: this grouping is for other labels: name the data's own (the "
     "data has "
     "admiration, amusement, anger, annoyance, approval, ...)"),
    (["not", "a", "mapping"], "data.grouping: {path} must be a JSON object {{group: [label, ...]}}"),
    ({"all": GOEMOTIONS_28[:27], "empty": []},
     "data.grouping: {path}: group 'empty' lists []: " + EACH_GROUP),
    ({"all": GOEMOTIONS_28[:27], "nums": [1, 2]},
     "data.grouping: {path}: group 'nums' lists [1, 2]: " + EACH_GROUP),
    # found by a new user: a label twice in one group read as in two groups, a group named twice merged unsaid, a
    # group without a name became a label '', a byte order mark made the file unreadable
    ({"all": [*GOEMOTIONS_28[:27], "joy"]}, "data.grouping: {path}: group 'all' lists ['admiration', 'amusement', "
     "'anger', 'annoyance', 'approval', 'caring', ...]: " + EACH_GROUP),
    ('{"a": ' + json.dumps(GOEMOTIONS_28[:20]) + ', "a": ' + json.dumps(GOEMOTIONS_28[20:27]) + "}",
     "data.grouping: {path}: group 'a' is named twice: list its labels once, under one name"),
    ({"": GOEMOTIONS_28[:27]}, "data.grouping: {path}: group '' lists ['admiration', 'amusement', 'anger', "
     "'annoyance', 'approval', 'caring', ...]: " + EACH_GROUP),
    ({"neutral": GOEMOTIONS_28[:10], "other": GOEMOTIONS_28[10:27]},
     "{where}: group 'neutral' has the name of a label kept as itself (neutral, which no group lists): rename the "
     "group, or list neutral in a group"),
    ("{", "data.grouping: {path}: unreadable (Expecting property name enclosed in double quotes: line 1 column 2 "
          "(char 1))"),
])
def test_a_bad_mapping_is_one_line(tmp_path, mapping, message):
    directory = write_goemotions_28(tmp_path / "ge", {"train": 56, "dev": 28, "test": 28})
    path = tmp_path / "map.json"
    path.write_text(mapping if isinstance(mapping, str) else json.dumps(mapping))
    assert refusal(directory, grouping=str(path)) == message.format(where=f"data.grouping={path}", path=path)


def test_a_mapping_file_with_a_byte_order_mark_reads_as_data_files_do(tmp_path):
    directory = write_goemotions_28(tmp_path / "ge", {"train": 56, "dev": 28, "test": 28})
    path = tmp_path / "map.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"all": GOEMOTIONS_28[:27]}).encode())  # Notepad's UTF-8
    assert load_dir(directory, grouping=str(path)).labels == ["all", "neutral"]


def test_a_bad_mapping_file_beside_the_data_is_named_with_the_grouping(tmp_path):
    directory = write_goemotions_28(tmp_path / "ge", {"train": 56, "dev": 28, "test": 28})
    beside = directory / "sentiment_dict.json"
    beside.write_text(json.dumps({"a": GOEMOTIONS_28[:20]}))
    assert refusal(directory, grouping="sentiment") == (
        f"data.grouping=sentiment ({beside}): no group for optimism, pride, realization, relief, remorse: add them "
        "to a group")
    beside.write_text(json.dumps({"a": [*GOEMOTIONS_28, "glee"]}))  # the data's own file, not the published mapping
    assert refusal(directory, grouping="sentiment") == (
        f"data.grouping=sentiment ({beside}): glee not among the goemotions labels: this grouping is for other labels: "
        "name the data's own (the data has admiration, amusement, anger, annoyance, approval, ...)")
    missing = tmp_path / "nowhere.json"
    assert refusal(directory, grouping=str(missing)) == (
        f"data.grouping: {missing}: unreadable ([Errno 2] No such file or directory: '{missing}')")


def test_a_grouping_of_other_labels_is_refused(tmp_path):
    with pytest.raises(UsageError, match="this grouping is for GoEmotions' 28 emotions"):
        load_dir(write_goemotions(tmp_path / "ge"), grouping="ekman")


# ---------------------------------------------------------------------------------------------------
# Each reader's refusals whole (the file, the line, what is wrong), and the cells it accepts


def refusal(directory: Path, **kwargs) -> str:
    with pytest.raises(UsageError) as caught:
        load_dir(directory, **kwargs)
    return str(caught.value)


SEMEVAL_ROW = "2018-En-1\tI am scared\t0\t0\t0\t1\t0\t0\t0\t0\t0\t0\t0"


@pytest.mark.parametrize("content, line", [
    ("ID\tTweet\tanger\n", "1: expected the header ID, Tweet, anger, anticipation, disgust, fear, joy, love, optimism, "
                           "pessimism, sadness, surprise, trust"),
    ("", "1: expected the header ID, Tweet, anger, anticipation, disgust, fear, joy, love, optimism, pessimism, "
         "sadness, surprise, trust"),
    (f"{SEMEVAL_HEADER}\n{SEMEVAL_ROW}\n2018-En-2\thm\t0\t1\n", "3: expected 13 tab-separated columns, got 4"),
    (f"{SEMEVAL_HEADER}\n{SEMEVAL_ROW.replace(chr(9) + '1' + chr(9), chr(9) + '2' + chr(9))}\n",
     "2: emotion columns must be 0 or 1 (the unlabeled test file has NONE: use the gold file)"),
])
def test_semeval_refusals_name_the_file_and_line(tmp_path, content, line):
    directory = write_semeval(tmp_path / "se")
    dev = directory / "2018-E-c-En-dev.txt"
    dev.write_text(content)
    assert refusal(directory) == f"{dev}:{line}"


def test_semeval_files_with_windows_line_ends_read_as_the_same_data(tmp_path):
    unix = load_dir(write_semeval(tmp_path / "unix"))
    directory = write_semeval(tmp_path / "windows")
    for path in directory.iterdir():
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    windows = load_dir(directory)
    for split in data.SPLITS:
        assert windows.splits[split].texts == unix.splits[split].texts
        np.testing.assert_array_equal(windows.splits[split].targets, unix.splits[split].targets)
    assert unix.splits["dev"].texts == ["I am scared"] and unix.splits["dev"].targets[0].nonzero()[0].tolist() == [3]
    for path in directory.iterdir():  # blank lines, a file's last often: "expected 13 tab-separated columns, got 1"
        path.write_bytes(path.read_bytes() + b"\r\n\n")
    assert load_dir(directory).splits["dev"].texts == ["I am scared"]


@pytest.mark.parametrize("cell, names", [
    ("joy", ["joy"]),
    (" joy ; anger|surprise,  ", ["joy", "anger", "surprise"]),
    ("joy,,anger", ["joy", "anger"]),
    ('  ["joy", " anger ", ""]', ["joy", "anger"]),
    (["joy", " love ", " "], ["joy", "love"]),
    ("X-ray;joy", ["X-ray", "joy"]),
    ("", []),
    ([], []),
])
def test_a_label_cell_is_a_list_or_separated_names(cell, names):
    assert tables.label_names(cell, Path("t.csv"), 7) == names


@pytest.mark.parametrize("cell, message", [
    ("[joy", "label list '[joy' is not valid JSON"),
    ('["joy", 3]', "labels must be a list of label names, got ['joy', 3]"),
    (5, "labels must be a list of label names, got 5"),
    (None, "labels must be a list of label names, got None"),
])
def test_a_label_cell_of_anything_else_names_its_line(cell, message):
    with pytest.raises(UsageError) as caught:
        tables.label_names(cell, Path("t.csv"), 7)
    assert str(caught.value) == f"t.csv:7: {message}"


def test_a_table_without_labels_or_with_one_labels_txt_lacks_is_one_line(tmp_path):
    directory = tmp_path / "feelings"
    directory.mkdir()
    for split in ("train", "dev", "test"):
        (directory / f"{split}.csv").write_text("text,labels\nyay,\nhm,\n")
    assert refusal(directory) == f"{directory / 'train.csv'}: no labels in column 'labels'"
    (directory / "labels.txt").write_text("joy\nanger\n")
    (directory / "test.csv").write_text("text,labels\nyay,joy\nhm,confusion\n")
    assert refusal(directory) == (f"{directory / 'test.csv'}:3: unknown label 'confusion': not in "
                                  f"{directory / 'labels.txt'}")
    (directory / "test.csv").write_text("text,labels\nyay,joy\nhm,\n")
    loaded = load_dir(directory)
    assert loaded.name == "feelings" and loaded.labels == ["joy", "anger"]
    np.testing.assert_array_equal(loaded.splits["test"].targets, [[1, 0], [0, 0]])  # a text with no label is valid


def test_the_cache_directory_is_the_setting_then_emodist_cache_then_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EMODIST_CACHE", str(tmp_path / "env"))
    assert files.cache_root(str(tmp_path / "set")) == tmp_path / "set"
    assert files.cache_root(None) == tmp_path / "env"
    monkeypatch.delenv("EMODIST_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files.cache_root(None) == tmp_path / "home" / ".cache" / "emodist"


def test_jsonl_skips_blank_lines_and_names_each_bad_line_whole(tmp_path):
    directory = write_jsonl(tmp_path / "j")
    dev = directory / "dev.jsonl"
    dev.write_text('{"text": "yay", "labels": ["joy"]}\n\n   \n{"text": "grr", "labels": ["joy"]}\n')
    assert load_dir(directory).splits["dev"].texts == ["yay", "grr"]
    dev.write_text('{"text": "yay", "labels": ["joy"]}\n["not", "an", "object"]\n')
    assert refusal(directory) == f"{dev}:2: each line must be a JSON object"
    dev.write_text('{"text": "yay", "labels": ["joy"]}\n\n{"text": \n')
    assert refusal(directory) == f"{dev}:3: invalid JSON: Expecting value"


def test_a_chosen_table_format_is_read_even_where_another_is_beside_it(tmp_path):
    directory = tmp_path / "both"
    directory.mkdir()
    for split in ("train", "dev", "test"):
        (directory / f"{split}.jsonl").write_text('{"text": "from jsonl", "labels": ["joy"]}\n')
        (directory / f"{split}.csv").write_text("text,labels\nfrom csv,joy\n")
    both = (f"data directory {directory}: holds more than one data set (train.jsonl (jsonl), train.csv (csv)): set "
            "data.dataset=jsonl or data.dataset=csv, or keep one data set in the directory")
    assert refusal(directory) == both  # not detected: which one is the user's to say
    assert load_dir(directory, dataset="csv").splits["train"].texts == ["from csv"]
    assert load_dir(directory, dataset="jsonl").splits["train"].texts == ["from jsonl"]
    (directory / "emotions.txt").write_text("joy\n")  # GoEmotions' label file alone is not its layout
    assert refusal(directory) == both
    for split in ("train", "dev", "test"):  # a whole GoEmotions set beside them: it was read, the others unsaid
        (directory / f"{split}.tsv").write_text("from tsv\t0\tid1\n")
    assert refusal(directory) == (
        f"data directory {directory}: holds more than one data set (train.tsv (goemotions), train.jsonl (jsonl), "
        "train.csv (csv)): set data.dataset=goemotions or data.dataset=jsonl or data.dataset=csv, or keep one data "
        "set in the directory")
    assert load_dir(directory, dataset="goemotions").splits["train"].texts == ["from tsv"]
    (directory / "train.jsonl").unlink()
    (directory / "train.csv").rename(directory / "2018-E-c-En-train.txt")
    assert refusal(directory).startswith(f"data directory {directory}: holds more than one data set (train.tsv "
                                         "(goemotions), 2018-E-c-En-train.txt (semeval2018)): set")


def test_a_byte_order_mark_is_dropped_from_the_first_line_only(tmp_path):
    directory = write_goemotions(tmp_path / "ge")
    train = directory / "train.tsv"
    train.write_bytes(b"\xef\xbb\xbfI love it\t0\ta1\n\xef\xbb\xbfSo angry\t1\ta2\n")
    assert load_dir(directory).splits["train"].texts == ["I love it", "\ufeffSo angry"]


def test_a_subset_keeps_each_text_with_its_labels():
    split = data.synthetic(0).splits["train"]
    part = split.subset(200, seed=3)
    rows = {text: row.tolist() for text, row in zip(split.texts, split.targets, strict=True)}
    assert [rows[text] for text in part.texts] == part.targets.tolist()
    assert split.subset(len(split), seed=3) is split and split.subset(None, seed=3) is split


def test_table_refusals_name_the_file_and_line_whole(tmp_path):
    directory = write_jsonl(tmp_path / "j")
    (directory / "labels.txt").write_text("joy\nanger\njoy\n")
    assert refusal(directory) == (f"{directory / 'labels.txt'}:3: label 'joy' is listed a second time (first at "
                                  "line 1): each label once")
    (directory / "labels.txt").unlink()
    dev = directory / "dev.jsonl"
    dev.write_text('{"text": "yay", "labels": ["joy"]}\n{"text": 42, "labels": ["joy"]}\n')
    assert refusal(directory) == f"{dev}:2: the text column 'text' holds 42, not a string: quote it as text"
    dev.write_text('{"text": "yay", "labels": ["joy"]}\n{"text": "hm", "labels": "[joy"}\n')
    assert refusal(directory) == f"{dev}:2: label list '[joy' is not valid JSON"
    dev.write_text('{"text": "yay", "labels": ["joy"]}\n{"text": "  ", "labels": ["joy"]}\n')
    assert refusal(directory) == f"{dev}:2: empty text"
    dev.unlink()
    assert refusal(directory) == f"{directory}: missing dev.jsonl or validation.jsonl or val.jsonl"


def test_an_empty_semeval_text_names_its_file_and_line(tmp_path):
    directory = write_semeval(tmp_path / "se")
    dev = directory / "2018-E-c-En-dev.txt"
    dev.write_text(f"{SEMEVAL_HEADER}\n{SEMEVAL_ROW.replace('I am scared', ' ')}\n")
    assert refusal(directory) == f"{dev}:2: empty text"


def test_goemotions_rows_without_their_id_column_load(tmp_path):
    directory = write_goemotions(tmp_path / "ge", {"train": ["I love it\t0,2", "So angry\t1"], "dev": ["joy\t2"],
                                                   "test": ["grr\t1\tc1"]})
    loaded = load_dir(directory)
    assert loaded.splits["train"].texts == ["I love it", "So angry"]
    np.testing.assert_array_equal(loaded.splits["train"].targets, [[1, 0, 1, 0], [0, 1, 0, 0]])


def test_a_capped_split_is_the_same_examples_on_every_load_of_a_seed():
    def train_texts(seed: int) -> list[str]:
        return data.load(DataConfig(dataset="synthetic", max_train_examples=50), seed=seed).splits["train"].texts

    assert train_texts(0) == train_texts(0) != train_texts(1)


def test_refusals_list_up_to_five_of_the_bad_labels(tmp_path):
    directory = write_goemotions_28(tmp_path / "ge", {"train": 56, "dev": 28, "test": 28})
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"a": [*GOEMOTIONS_28, "glee", "awe", "zeal", "dread", "bliss", "angst"]}))
    assert refusal(directory, grouping=str(path)) == (
        f"data.grouping={path}: angst, awe, bliss, dread, glee not among the goemotions labels: this grouping is "
        "for other labels: name the data's own (the data has admiration, amusement, anger, annoyance, approval, ...)")
    path.write_text(json.dumps({"a": GOEMOTIONS_28, "b": GOEMOTIONS_28[:6]}))
    assert refusal(directory, grouping=str(path)) == (
        f"data.grouping={path}: labels in more than one group: admiration (a, b); amusement (a, b); anger (a, b); "
        "annoyance (a, b); approval (a, b)")


def test_a_csv_error_names_the_line_that_holds_it(tmp_path):
    """Python's csv reports a stray carriage return before counting its line: the refusal used to name the line
    before (found by a surviving mutant of the refusal's line number)."""
    directory = tmp_path / "c"
    directory.mkdir()
    for split in ("train", "dev", "test"):
        (directory / f"{split}.csv").write_text("text,labels\nyay,joy\n")
    dev = directory / "dev.csv"
    dev.write_bytes(b'text,labels\nyay,joy\n"two\nlines",joy\nsay \rhi,joy\n')
    assert refusal(directory) == (f"{dev}:5: a carriage return (\\r) outside quotes (old Mac line endings?): save the "
                                  "file with \\n line endings")  # csv's own: "open the file in universal-newline mode"
    dev.write_bytes(b"text,labels\ryay,joy\r")  # a whole file of them
    assert refusal(directory).startswith(f"{dev}:1: a carriage return (\\r) outside quotes")
