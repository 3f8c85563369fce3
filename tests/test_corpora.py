"""The one reader per public corpus (kardia.corpora) on small fixtures and, when present, the real data:
what it yields, the one ESConv emotion map, and bad rows named by file, line and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kardia.corpora import ed, esconv, personachat, shared_data_file
from kardia.emotions import LABELS
from kardia.records import RecordError

FIX = Path(__file__).parent / "data" / "corpora"


# -- EmpatheticDialogues ---------------------------------------------------------------------------


def test_ed_situations_fixture():
    rows = list(ed.read_situations(FIX / "ed_situations.csv"))
    assert [(r.line, r.emotion) for r in rows] == [(2, "joyful"), (3, "afraid")]
    assert rows[0].text == "i was so happy, my sister visited"  # _comma_ restored, whitespace collapsed


def test_ed_situation_bad_rows_are_located(tmp_path):
    p = tmp_path / "ed.csv"
    p.write_text('text,aug_text,label\n"ok",x,6\n"odd",x,45\n"",x,3\n"x",x,abc\n')
    with pytest.raises(RecordError) as e:
        list(ed.read_situations(p))
    assert (e.value.path, e.value.line, e.value.field) == (str(p), 3, "label")
    bad: list = []
    assert [r.line for r in ed.read_situations(p, skip_bad=True, bad=bad)] == [2]
    assert [(b.line, b.field) for b in bad] == [(3, "label"), (4, "text"), (5, "label")]
    nohdr = tmp_path / "nohdr.csv"
    nohdr.write_text("text,aug_text\nx,y\n")
    with pytest.raises(RecordError) as e:
        list(ed.read_situations(nohdr))
    assert (e.value.line, e.value.field) == (1, "label")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        list(ed.read_situations(tmp_path / "missing.csv"))


def test_ed_conversations_fixture():
    convs = list(ed.read_conversations(FIX / "ed_conversations.csv"))
    assert [(c.conv_id, c.emotion, len(c.utterances)) for c in convs] == [("c1", "anxious", 3), ("c2", "proud", 2)]
    assert convs[0].situation == "my dog got lost, then found"
    assert [u.text for u in convs[0].utterances][1] == "Oh no, did you find him?"
    assert [(u.line, u.idx) for u in convs[1].utterances] == [(5, 1), (6, 2)]


@pytest.mark.parametrize(
    "rows, line, field",
    [
        ("c1,1,p,a,18\nc1,3,p,b,18\n", 3, "utterance_idx"),  # a gap
        ("c1,2,p,a,18\n", 2, "utterance_idx"),  # does not start at 1
        ("c1,1,p,a,18\nc1,2,p,b,19\n", 3, "label"),  # several labels in one conversation
        ("c1,1,p,a,77\n", 2, "label"),
        ("c1,x,p,a,18\n", 2, "utterance_idx"),
        (" ,1,p,a,18\n", 2, "conv_id"),
    ],
)
def test_ed_conversation_bad_rows_are_located(tmp_path, rows, line, field):
    p = tmp_path / "conv.csv"
    p.write_text("conv_id,utterance_idx,prompt,utterance,label\n" + rows)
    with pytest.raises(RecordError) as e:
        list(ed.read_conversations(p))
    assert (e.value.path, e.value.line, e.value.field) == (str(p), line, field)


# -- ESConv ----------------------------------------------------------------------------------------


def test_esconv_fixture_and_turns():
    recs = list(esconv.read_dialogues(FIX / "esconv.jsonl"))
    assert [n for n, _ in recs] == [1, 2]
    first = recs[0][1]
    assert first.emotion_type == "anxiety" and first.seeker_survey == {"empathy": "5", "relevance": "4"}
    assert first.turns("\n") == [
        ("assistant", "Hello, how are you?"),
        ("user", "Not great.\nI may lose my job."),
        ("assistant", "That sounds stressful."),
        ("user", "It is."),
        ("assistant", "What worries you most?"),
    ]
    assert first.turns(" ")[1] == ("user", "Not great. I may lose my job.")
    assert recs[1][1].seeker_survey == {}


def test_esconv_bad_rows_are_located(tmp_path):
    p = tmp_path / "es.jsonl"
    good = json.loads((FIX / "esconv.jsonl").read_text().splitlines()[0])
    p.write_text(json.dumps(good) + "\n{oops\n" + json.dumps(dict(good, dialog=[{"text": "hi", "speaker": "bot"}])) + "\n")
    with pytest.raises(RecordError) as e:
        list(esconv.read_dialogues(p))
    assert (e.value.path, e.value.line, e.value.field) == (str(p), 2, None)
    bad: list = []
    assert [n for n, _ in esconv.read_dialogues(p, skip_bad=True, bad=bad)] == [1]
    assert [(b.line, b.field) for b in bad] == [(2, None), (3, "dialog.0.speaker")]


def test_the_one_esconv_map():
    """Build and eval read one map: every ESConv type has one label; approximate ones are flagged."""
    m = esconv.load_emotion_map()
    assert set(m) == {"anxiety", "sadness", "anger", "fear", "disgust", "shame", "guilt", "jealousy",
                      "depression", "nervousness", "pain"}
    assert all(e.label in LABELS for e in m.values())
    approx = {k: e.label for k, e in m.items() if e.match == "approximate"}
    assert approx == {"depression": "sad", "nervousness": "apprehensive", "pain": "devastated"}
    assert m["pain"].gold() == "devastated" and m["pain"].gold(include_approximate=False) is None
    assert m["anxiety"].gold(include_approximate=False) == "anxious"


def test_esconv_map_errors_name_the_entry(tmp_path):
    p = tmp_path / "map.yaml"
    p.write_text("anxiety: anxious\n")  # the flat form is not accepted: every entry says how exact it is
    with pytest.raises(ValueError, match="entry 'anxiety'"):
        esconv.load_emotion_map(str(p))
    p.write_text("anxiety: {label: worried, match: exact}\n")
    with pytest.raises(ValueError, match="not one of the 32 labels"):
        esconv.load_emotion_map(str(p))
    p.write_text("pain: {label: sad, match: none}\n")
    with pytest.raises(ValueError, match="null exactly when match is none"):
        esconv.load_emotion_map(str(p))


def test_consumers_share_the_map(tmp_path):
    """A seed and an eval item of the same ESConv record get the same label from the same map."""
    from kardia.data.seeds import esconv_seeds
    from kardia.eval.loaders import load_items

    seeds = list(esconv_seeds(FIX / "esconv.jsonl"))
    items = list(load_items(FIX / "esconv.jsonl", fmt="esconv"))
    assert [s.emotion for s in seeds] == ["anxious", "devastated"]
    assert {i.gold_emotion for i in items if i.dialogue_id.endswith("-2")} == {"devastated"}
    own = tmp_path / "own.yaml"
    own.write_text("anxiety: {label: anxious, match: exact}\npain: {label: null, match: none}\n")
    bad: list = []
    assert [s.emotion for s in esconv_seeds(FIX / "esconv.jsonl", emotion_map=own, skip_bad=True, bad=bad)] == ["anxious"]
    assert [(b.line, b.field) for b in bad] == [(2, "emotion_type")]


# -- PersonaChat -----------------------------------------------------------------------------------


def test_personachat_fixture():
    sets = list(personachat.read_persona_sets(FIX / "personachat.txt"))
    assert [(s.line, s.facts) for s in sets] == [
        (1, ["i like to ski .", "i have two cats ."]),
        (4, ["i like to ski .", "i have two cats ."]),
        (7, ["i am a nurse ."]),
    ]
    from kardia.data.profiles import personachat_profiles

    profs = list(personachat_profiles(FIX / "personachat.txt"))  # a reused persona set gives one profile
    assert [p.id for p in profs] == ["personachat:1", "personachat:7"]
    assert profs[0].person == "About: I like to ski. I have two cats."
    with pytest.raises(FileNotFoundError, match="PersonaChat"):
        list(personachat.read_persona_sets(FIX / "missing.txt"))


# -- shared data -----------------------------------------------------------------------------------


def test_shared_data_file(tmp_path, monkeypatch):
    (tmp_path / "esconv").mkdir()
    (tmp_path / "esconv" / "x.jsonl").write_text("")
    monkeypatch.setenv("KARDIA_SHARED_DATA", str(tmp_path))
    assert shared_data_file("esconv", "x.jsonl") == tmp_path / "esconv" / "x.jsonl"
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "esconv" / "nope.jsonl")):
        shared_data_file("esconv", "nope.jsonl")


def test_readers_on_the_real_data(shared_data):
    ed_dir, es_dir = shared_data / "empatheticdialogues", shared_data / "esconv"
    sits = list(ed.read_situations(ed_dir / "ed_situations_valid.csv"))
    assert len(sits) == 2761 and all(s.emotion in LABELS and "_comma_" not in s.text for s in sits)
    convs = list(ed.read_conversations(ed_dir / "ed_valid_utterances_kaggle.csv"))
    assert len(convs) == 2770 and all(c.utterances[0].idx == 1 for c in convs)
    m = esconv.load_emotion_map()
    for name, n in (("esconv_train.jsonl", 910), ("esconv_valid.jsonl", 195)):
        recs = [r for _, r in esconv.read_dialogues(es_dir / name)]
        assert len(recs) == n and all(r.emotion_type.strip().lower() in m and r.dialog for r in recs)
    sets = list(personachat.read_persona_sets(shared_data / "personachat" / "personachat_valid_self_original_no_cands.txt"))
    assert len(sets) == 1000 and len({" ".join(s.facts).lower() for s in sets}) == 992


def test_corpora_is_foundation_layer():
    """Importing the readers loads no torch and none of kardia's higher floors."""
    code = (
        "import sys, kardia.corpora.ed, kardia.corpora.esconv, kardia.corpora.personachat; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'trl') "
        "or m.split('.')[:2] in (['kardia', 'data'], ['kardia', 'eval'], ['kardia', 'judge'], ['kardia', 'llm'])]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
