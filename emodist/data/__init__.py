"""Emotion data sets: read, check, subsample, group, tokenize, batch.

    data = emodist.data.load(cfg.data, seed=cfg.train.seed)     # -> EmotionData (labels + 3 splits)

Sources (data.dataset):
  goemotions   hub `google-research-datasets/go_emotions` (simplified), or a directory in the original
               layout: train.tsv, dev.tsv, test.tsv (text <TAB> comma-separated label ids <TAB> comment id)
               and emotions.txt (one label name per line, the ids index it).
  semeval2018  hub `SemEvalWorkshop/sem_eval_2018_task_1` (subtask5.english), or a directory with the
               official 2018-E-c-En-{train,dev,test-gold}.txt (header `ID Tweet anger ... trust`, 0/1 columns).
  csv, jsonl   {train,dev,test}.{csv,jsonl} with a text column and a label column holding a list of names
               (JSON list, or names separated by , ; or | in CSV). labels.txt (one name per line) fixes the
               label set and its order; otherwise it is the sorted set of train labels.
  synthetic    the built-in deterministic emotion set used by --smoke (`synthetic()`).
  auto         detect goemotions / semeval2018 / csv / jsonl from the files in data_dir.

Every bad input (missing file, malformed row, unknown label, empty text, empty split, bad encoding)
raises one UsageError naming the file and line.

The modules: `sets` (splits in memory, their fingerprints), `readers` (every source: `tables` reads csv and
jsonl, `rows` is what every file reader shares), `synthetic`,
`grouping` (coarser labels), `tokens` (tokenized splits and their cache, batches), `sampling` (batches of
similar lengths), `packing` (batches without padding). Imports `emodist.config` and `emodist.runtime` only.
"""


from emodist.data.grouping import GROUPINGS, group
from emodist.data.packing import PACKED_MULTIPLE, PackedCollator
from emodist.data.readers import detect, load
from emodist.data.sets import (
    SPLITS,
    EmotionData,
    Split,
    fingerprint_texts,
    identity,
    label_warnings,
    shared_warning,
    shared_with_train,
    split_fingerprint,
    untrained_labels,
)
from emodist.data.synthetic import SYNTHETIC_CUES, synthetic
from emodist.data.tokens import collator, lengths, tokenize

__all__ = ["GROUPINGS", "PACKED_MULTIPLE", "SPLITS", "SYNTHETIC_CUES", "EmotionData", "PackedCollator", "Split",
           "collator", "detect", "fingerprint_texts", "group", "identity", "label_warnings", "lengths", "load", "shared_warning",
           "shared_with_train", "split_fingerprint", "synthetic", "tokenize", "untrained_labels"]
