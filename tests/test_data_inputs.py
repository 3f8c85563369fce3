"""Build inputs and post-processing without any model: profiles, seeds, plan, anonymise, filters,
dedup, split. Plain Python (no CPU lock needed)."""

from __future__ import annotations

import json

import pytest

from kardia.data.anonymise import anon_username, scrub, scrub_record
from kardia.data.config import BuildConfig
from kardia.data.dedup import NearDupIndex
from kardia.data.filters import apply_filters, check_emotion_jumps, check_identity_drift, check_structure
from kardia.data.plan import dialogue_id, make_plan, parse_shard, shard
from kardia.data.profiles import (
    Profile,
    assign_mbti,
    esconv_profiles,
    extract_mbti,
    personachat_profiles,
    read_person_file,
)
from kardia.data.seeds import Seed, ed_seeds, esconv_seeds, jsonl_seeds
from kardia.data.split import difficulty, pick_test_profiles
from kardia.paths import resource_path
from kardia.records import RecordError
from kardia.spans import render

# -- profiles -----------------------------------------------------------------------------------


def test_extract_mbti():
    assert extract_mbti("MBTI: infj\nAbout: x") == "INFJ"
    assert extract_mbti("About: a proud INTP-T who codes") == "INTP"
    assert extract_mbti("About: I like intp memes") == ""  # lower-case free text is not a claim
    assert extract_mbti("About: nothing") == ""


def test_sample_profiles_and_assignment():
    profs = list(read_person_file(resource_path("samples", "profiles.jsonl")))
    assert len(profs) == 24
    assert all(p.person and p.username for p in profs)
    no_type = [p for p in profs if not p.mbti]
    assert len(no_type) == 1 and not no_type[0].mbti_assigned
    a1, a2 = assign_mbti(no_type[0], seed=3), assign_mbti(no_type[0], seed=3)
    assert a1.mbti == a2.mbti and a1.mbti_assigned and a1.person.startswith(f"MBTI: {a1.mbti}")
    typed = profs[0]
    assert assign_mbti(typed, 3) == typed  # a stated type is never replaced


def test_person_file_errors_name_file_line_field(tmp_path):
    p = tmp_path / "profiles.jsonl"
    p.write_text('{"person": "MBTI: INFP\\nAbout: ok"}\n{"persn": "typo"}\nnot json\n{"person": "x", "mbti": "ABCD"}\n')
    with pytest.raises(RecordError) as e:
        list(read_person_file(p))
    assert e.value.line == 2 and e.value.field == "person" and str(p) in str(e.value)
    bad: list = []
    got = list(read_person_file(p, skip_bad=True, bad=bad))
    assert len(got) == 1 and [b.line for b in bad] == [2, 3, 4] and bad[2].field == "mbti"
    c = tmp_path / "p.csv"
    c.write_text("username,person\nann,\"MBTI: ENTP\nAbout: hi\"\nbob,\n")
    with pytest.raises(RecordError) as e:
        list(read_person_file(c))
    assert e.value.field == "person" and e.value.line == 4
    assert list(read_person_file(c, skip_bad=True))[0].mbti == "ENTP"
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        list(read_person_file(tmp_path / "missing.jsonl"))


def test_personachat_and_esconv_profiles(shared_data):
    pc = personachat_profiles(shared_data / "personachat" / "personachat_valid_self_original_no_cands.txt")
    first = [next(pc) for _ in range(3)]
    assert first[0].person.startswith("About: I read twenty books a year.")
    assert len({p.id for p in first}) == 3 and all(p.mbti == "" for p in first)
    es = next(esconv_profiles(shared_data / "esconv" / "esconv_valid.jsonl"))
    assert "About: Going through" in es.person and "Recent Activities:" in es.person


# -- seeds --------------------------------------------------------------------------------------


def test_ed_seeds_map_ids_to_labels(shared_data):
    seeds = ed_seeds(shared_data / "empatheticdialogues" / "ed_situations_train.csv")
    s = next(seeds)
    assert s.emotion == "sentimental" and "fireworks" in s.situation and s.id.endswith(":2")


def test_unknown_label_id_is_located(tmp_path):
    p = tmp_path / "ed.csv"
    p.write_text('text,aug_text,label\n"i was happy",x,6\n"i was odd",x,45\n"no label",x,abc\n')
    with pytest.raises(RecordError) as e:
        list(ed_seeds(p))
    assert (e.value.line, e.value.field) == (3, "label") and "unknown label id 45" in str(e.value)
    bad: list = []
    assert [s.emotion for s in ed_seeds(p, skip_bad=True, bad=bad)] == ["joyful"]
    assert [b.line for b in bad] == [3, 4]


def test_esconv_and_jsonl_seeds(tmp_path, shared_data):
    s = next(esconv_seeds(shared_data / "esconv" / "esconv_train.jsonl"))
    assert s.emotion == "anxious" and s.source == "esconv"
    p = tmp_path / "es.jsonl"
    p.write_text(json.dumps({"emotion_type": "boredom", "situation": "x"}) + "\n")
    with pytest.raises(RecordError, match="emotion_type"):
        list(esconv_seeds(p))
    j = tmp_path / "s.jsonl"
    j.write_text('{"situation": "a", "emotion": 6}\n{"situation": "b", "emotion": "happyish"}\n')
    with pytest.raises(RecordError) as e:
        list(jsonl_seeds(j))
    assert (e.value.line, e.value.field) == (2, "emotion")
    assert len(list(jsonl_seeds(resource_path("samples", "situations.jsonl")))) == 192


def test_seed_jsonl_bad_lines_are_skipped_and_counted_once(tmp_path):
    """Broken JSON, a non-object and a bad label: each kept once in `bad`, with its line; good lines survive."""
    j = tmp_path / "s.jsonl"
    j.write_text('{"situation": "a", "emotion": 6}\n{oops\n[1, 2]\n\n{"situation": "b", "emotion": "happyish"}\n'
                 '{"situation": "c", "emotion": "sad"}\n')
    bad: list = []
    assert [s.situation for s in jsonl_seeds(j, skip_bad=True, bad=bad)] == ["a", "c"]
    assert [(b.line, b.field) for b in bad] == [(2, None), (3, None), (5, "emotion")]
    es = tmp_path / "es.jsonl"
    es.write_text('{"emotion_type": "anxiety", "situation": "x"}\n"just a string"\n')
    bad = []
    assert len(list(esconv_seeds(es, skip_bad=True, bad=bad))) == 1
    assert [b.line for b in bad] == [2]


# -- plan -----------------------------------------------------------------------------------------


def _profiles(n):
    return [Profile(id=f"p{i}", person=f"About: person {i}", username=f"u{i}") for i in range(n)]


def _seeds():
    out = []
    for i in range(60):
        out.append(Seed(id=f"s{i}", situation=f"sit {i}", emotion="sad" if i < 45 else ("joyful" if i < 55 else "proud"), source="t"))
    return out


def test_plan_reproducible_and_distributions():
    a = make_plan(_profiles(10), _seeds(), 3, "natural", seed=1)
    b = make_plan(_profiles(10), _seeds(), 3, "natural", seed=1)
    assert [i.id for i in a] == [i.id for i in b] and len(a) == 30 and len({i.id for i in a}) == 30
    assert a[0].id == dialogue_id("p0", a[0].seed.id, 0)
    nat = sum(i.emotion == "sad" for i in a)
    bal = make_plan(_profiles(10), _seeds(), 3, "balanced", seed=1)
    counts = {lab: sum(i.emotion == lab for i in bal) for lab in ("sad", "joyful", "proud")}
    assert counts == {"sad": 10, "joyful": 10, "proud": 10}
    assert nat > 15  # natural keeps the 75% majority label roughly
    other = make_plan(_profiles(10), _seeds(), 3, "natural", seed=2)
    assert [i.seed.id for i in other] != [i.seed.id for i in a]  # the seed matters


def test_shards_are_disjoint_and_complete():
    items = make_plan(_profiles(10), _seeds(), 3, seed=0)
    parts = [shard(items, i, 3) for i in range(3)]
    ids = [i.id for p in parts for i in p]
    assert sorted(ids) == sorted(i.id for i in items)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


# -- anonymise --------------------------------------------------------------------------------------


def test_scrub_and_hash():
    t = "mail jo.doe+x@gmail.com, call (415) 555-0199 or +44 20 7946 0958, see https://x.io/a?b=1 and @jo_doe."
    s = scrub(t)
    for needle in ("jo.doe", "555-0199", "7946", "x.io", "@jo_doe"):
        assert needle not in s
    assert "[email]" in s and "[phone]" in s and "[url]" in s and "[handle]" in s
    assert scrub("I read 20 books in 2019, 3.5 stars.") == "I read 20 books in 2019, 3.5 stars."
    h = anon_username("alice", "salt1")
    assert h == anon_username("alice", "salt1") != anon_username("alice", "salt2") and "alice" not in h
    rec = {"id": "kb-1", "person": "a@b.com", "messages": [{"role": "user", "content": "@bob"}], "meta": {"x": "http://h"}}
    out = scrub_record(rec)
    assert out["person"] == "[email]" and out["messages"][0]["content"] == "[handle]" and out["meta"] == {"x": "http://h"}


ADDRESSES = [
    "221B Baker Street", "1600 Pennsylvania Ave NW", "742 Evergreen Terrace", "10 Downing St.", "350 5th Ave",
    "4 Privet Drive", "12 rue de la Paix", "8 Rue du Faubourg Saint-Honoré", "Hauptstraße 12", "Via Roma 5",
    "Calle Mayor 3", "221b baker street", "12-14 High Road", "PO Box 42", "Keizersgracht 123", "NW1 6XE",
]
NOT_ADDRESSES = [
    "I walked 5 long miles down the road", "i drive a big truck. 8 i drive a jeep", "7 beautiful place",
    "no way i'd go. 12 no way", "I won first place in 2019", "My 3 best friends live on Main Street",
    "we moved 3 times in 2 years", "it is a 5 story place", "a 2 lane highway", "sent 3 via email",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_street_addresses_are_scrubbed(address):
    s = scrub(f"Write to me at {address}, any time.")
    assert s == "Write to me at [address], any time.", s


def test_ordinary_numbers_and_street_words_are_kept():
    for text in NOT_ADDRESSES:
        assert scrub(text) == text


def test_own_username_in_free_text_is_scrubbed():
    person = "About: I'm Maya_R (maya_r on most sites).\nSignature: -- maya_r\nnot maya_rose or xmaya_r"
    s = scrub(person, names=["maya_r"])
    assert s.count("[username]") == 3 and "maya_rose" in s and "xmaya_r" in s
    assert scrub("a.b (c) here", names=["a.b (c)"]) == "[username] here"  # regex characters are literal


# -- filters, dedup, split -------------------------------------------------------------------------


def _rec(users, labels, mbti="INFP", emotion="sad"):
    msgs = [{"role": "system", "content": "sys"}]
    for u, lab in zip(users, labels):
        msgs.append({"role": "user", "content": u})
        msgs.append({"role": "assistant", "content": render("They feel low.", "Because it hurts.", lab, "I'm here for you.")})
    return {"id": "kb-x", "person": "About: me", "mbti": mbti, "emotion": emotion, "situation": "s",
            "anon_username": "u_1", "messages": msgs, "meta": {}}


def test_filters_decide_as_documented():
    cfg = BuildConfig()
    good = _rec(["I feel low.", "Still low."], ["sad", "sad"])
    assert apply_filters(good, cfg) == []
    # every emotion span is the gold label by default; with the responder choosing, a mismatch is dropped
    off_gold = _rec(["I feel low.", "Still low."], ["sad", "lonely"])
    assert any(r.startswith("emotion: assistant turn 2 says 'lonely'") for r in apply_filters(off_gold, cfg))
    broken = _rec(["hi"], ["sad"])
    broken["messages"][2]["content"] = "<|understanding_begin|>x<|understanding_end|> just text"
    assert check_structure(broken) and apply_filters(broken, cfg)[0].startswith("structure")
    no_answer = _rec(["hi", "more"], ["sad", "sad"])
    no_answer["messages"].pop()
    assert check_structure(no_answer) == ["structure: ends with a user turn"]
    bad_label = _rec(["hi"], ["melancholic-ish"])
    assert any(r.startswith("emotion") for r in apply_filters(bad_label, cfg))
    drift = _rec(["As an AI language model I cannot feel."], ["sad"])
    assert check_identity_drift(drift)
    assert check_identity_drift(_rec(["As an ENTJ I just push through."], ["sad"]))
    assert not check_identity_drift(_rec(["As an INFP I cry at films."], ["sad"]))
    jumps = _rec(["a", "b", "c", "d"], ["sad", "joyful", "angry", "proud"])
    assert check_emotion_jumps(jumps, 1) and not check_emotion_jumps(jumps, 3)
    assert not check_emotion_jumps(_rec(["a", "b", "c"], ["sad", "surprised", "lonely"]), 0)


def test_dedup_minhash():
    idx = NearDupIndex("minhash")
    a = "I lost my job today and I do not know how to tell my family about it at all " * 3
    assert idx.check_and_add("a", a) is None
    assert idx.check_and_add("b", a + " really") == "a"
    assert idx.check_and_add("c", "my cat learned to open the fridge and ate the whole cake while I slept") is None


_TWINS_SCRIPT = """
import json
from kardia.data.dedup import NearDupIndex

idx = NearDupIndex("minhash", threshold=0.7)
out = []
for g in range(12):  # A and B are kept (not twins of each other); C is a twin of both
    words = [f"g{g}w{i}" for i in range(100)]
    a, b, c = " ".join(words[:80]), " ".join(words[20:]), " ".join(words)
    out += [idx.check_and_add(f"{g}-a", a), idx.check_and_add(f"{g}-b", b), idx.check_and_add(f"{g}-c", c)]
print(json.dumps(out))
"""


def test_dedup_twin_choice_does_not_depend_on_the_hash_seed():
    """Which kept twin dropped.jsonl names is the same under every PYTHONHASHSEED (issue 16 item 7)."""
    import os
    import subprocess
    import sys

    runs = []
    for seed in ("0", "1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", _TWINS_SCRIPT], env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(res.stdout))
    assert all(r == runs[0] for r in runs[1:]), runs
    first = runs[0]
    assert first[0::3] == [None] * 12 and first[1::3] == [None] * 12  # A and B kept
    named = [x for x in first[2::3] if x is not None]  # LSH may miss a candidate; most C are found
    assert len(named) >= 8 and all(x.split("-")[1] in ("a", "b") for x in named)


def test_difficulty_rule_and_profile_split():
    assert difficulty({"FAIL": 1, "PASS": 2, "SOLVED": 0}) == "easy"
    assert difficulty({"FAIL": 3, "PASS": 1, "SOLVED": 1}) == "hard"
    assert difficulty({"FAIL": 2, "PASS": 1, "SOLVED": 1}) == "hard"  # pFAIL = pPASS + pSOLVED is not easy
    assert difficulty({"FAIL": 0, "PASS": 0, "SOLVED": 0}) is None
    ids = [f"p{i}" for i in range(20)]
    t = pick_test_profiles(ids, 0.1, seed=0)
    assert len(t) == 2 and t == pick_test_profiles(reversed(ids), 0.1, seed=0)
    assert len(pick_test_profiles(["a", "b"], 0.1)) == 1 and pick_test_profiles(["a"], 0.1) == set()


def test_crisis_filter_uses_safety_module():
    from kardia.data.filters import check_crisis

    ignored = _rec(["I want to end my life tonight, I have the pills ready."], ["devastated"])
    assert check_crisis(ignored) and check_crisis(ignored)[0].startswith("crisis")
    from kardia.safety import assess, crisis_reply

    handled = _rec(["I want to end my life tonight, I have the pills ready."], ["devastated"])
    reply = crisis_reply(assess(handled["messages"][1]["content"]))
    handled["messages"][2]["content"] = render("at risk", "needs help now", "devastated", reply)
    assert check_crisis(handled) == []
    assert check_crisis(_rec(["My exam went badly."], ["sad"])) == []
