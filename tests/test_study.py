"""The side-by-side study: pairs built from two systems' videos, votes through the JSON API (and
a real browser when chromium is installed), the automatic rater, and the report."""

import json
import shutil
import sqlite3
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from magicvideo.media import read_video, write_video
from magicvideo.study.build import media_dir, new_study
from magicvideo.study.db import StudyError, add_rater, connect, vote
from magicvideo.study.report import bradley_terry, build_report, kappa, plot
from magicvideo.world import draw_clip, render_clip

PROMPTS = 4


@pytest.fixture(scope="module")
def systems(tmp_path_factory) -> dict[str, Path]:
    """Two systems on the same world prompts: 'truth' (the world's own clips, as video files named
    by prompt) and 'frozen' (the first frame held, in run folders as `generate` writes them)."""
    root = tmp_path_factory.mktemp("systems")
    truth, frozen = root / "truth", root / "frozen"
    truth.mkdir()
    for i in range(PROMPTS):
        clip = draw_clip(11, "heldout", i)
        frames = render_clip(clip.scene, 64, fps=8, frames=12)
        write_video(truth / f"{clip.caption}.mp4", frames, 8)
        run = frozen / f"run-{i}"
        run.mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps({"settings": {"prompt": clip.caption}, "stages": {}}))
        write_video(run / "final.mp4", frames[:, :1].expand_as(frames).contiguous(), 8, "web")
    return {"truth": truth, "frozen": frozen}


@pytest.fixture()
def study(systems, tmp_path) -> Path:
    path = tmp_path / "s.db"
    new_study(path, [f"{n}={d}" for n, d in systems.items()], seed=3, progress=False).close()
    return path


def test_new_pairs_every_shared_prompt_with_random_sides_and_browser_copies(study, systems):
    db = connect(study)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "1"
    pairs = db.execute("SELECT p.*, vl.system AS ls FROM pairs p JOIN videos vl ON vl.id = p.left_video").fetchall()
    assert len(pairs) == PROMPTS and len({p["prompt"] for p in pairs}) == PROMPTS
    assert len({p["ls"] for p in pairs}) == 2  # each system is shown on the left somewhere (seed 3)
    files = sorted(p.name for p in media_dir(study).iterdir())
    assert len(files) == 2 * PROMPTS and all(f.endswith(".webm") for f in files)
    frames, fps = read_video(media_dir(study) / files[0])
    assert frames.shape == (3, 12, 64, 64) and fps == 8
    assert not any(p.name.endswith(".partial") for p in study.parent.iterdir())


def test_new_refuses_bad_input_before_writing_anything(systems, tmp_path):
    good = [f"{n}={d}" for n, d in systems.items()]
    cases = [
        (["truth=" + str(systems["truth"])], "at least two systems"),
        (good[:1] + ["truth=" + str(systems["frozen"])], "its own NAME"),
        (good[:1] + ["nonsense"], "NAME=RUNS_DIR"),
        (good[:1] + [f"x={tmp_path / 'absent'}"], "no folder"),
        (good[:1] + [f"x={tmp_path}"], "holds no videos"),
    ]
    for specs, message in cases:
        with pytest.raises(StudyError, match=message):
            new_study(tmp_path / "s.db", specs, progress=False)
    with pytest.raises(StudyError, match="not one of the systems"):
        new_study(tmp_path / "s.db", good, against="nobody", progress=False)
    listed = tmp_path / "prompts.txt"
    listed.write_text("a prompt nobody made\n")
    with pytest.raises(StudyError, match="lack a video"):
        new_study(tmp_path / "s.db", good, prompts_file=str(listed), progress=False)
    assert not (tmp_path / "s.db").exists() and not media_dir(tmp_path / "s.db").exists()
    (tmp_path / "s.db").write_text("")
    with pytest.raises(StudyError, match="exists already"):
        new_study(tmp_path / "s.db", good, progress=False)


def test_votes_are_one_per_rater_and_pair_and_names_are_unique(study):
    db = connect(study)
    ann = add_rater(db, "ann")
    with pytest.raises(StudyError, match="taken"):
        add_rater(db, " ann ")
    vote(db, ann["id"], 1, "left")
    with pytest.raises(StudyError, match="already"):
        vote(db, ann["id"], 1, "right")
    with pytest.raises(StudyError, match="one of"):
        vote(db, ann["id"], 2, "both")
    with pytest.raises(StudyError, match="no pair"):
        vote(db, ann["id"], 999, "left")
    assert db.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == 1
    plain = sqlite3.connect(study.parent / "plain.db")
    plain.execute("CREATE TABLE t (x)")
    plain.close()
    with pytest.raises(StudyError, match="not a study database"):
        connect(study.parent / "plain.db")


def _call(base: str, path: str, body: dict | None = None, token: str | None = None, headers: dict | None = None):
    request = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"X-Rater-Token": token or "", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = response.read()
            return response.status, (json.loads(data) if "json" in response.headers["Content-Type"] else data)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture()
def server(study):
    from magicvideo.study.server import StudyServer

    srv = StudyServer(study, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", srv
    srv.shutdown()
    srv.server_close()


def test_the_api_serves_pairs_takes_votes_and_only_the_studys_videos(server, study):
    base, _ = server
    status, page = _call(base, "/")
    assert status == 200 and b"Which video is better?" in page
    assert _call(base, "/api/next")[0] == 400  # no token
    status, joined = _call(base, "/api/join", {"name": "bo"})
    assert status == 200 and joined["name"] == "bo"
    assert _call(base, "/api/join", {"name": "bo"})[0] == 400  # the name is taken
    token = joined["token"]
    seen = []
    while True:
        status, state = _call(base, "/api/next", token=token)
        if state["pair"] is None:
            break
        pair = state["pair"]
        seen.append(pair["id"])
        assert state["done"] == len(seen) - 1 and state["total"] == PROMPTS
        status, video = _call(base, pair["left"])
        assert status == 200 and video[:4] == b"\x1a\x45\xdf\xa3"  # a WebM (EBML) file
        status, part = _call(base, pair["right"], headers={"Range": "bytes=0-9"})
        assert status == 206 and len(part) == 10
        assert _call(base, "/api/vote", {"pair": pair["id"], "choice": "right"}, token=token)[0] == 200
        assert _call(base, "/api/vote", {"pair": pair["id"], "choice": "left"}, token=token)[0] == 409
    assert len(set(seen)) == PROMPTS
    assert _call(base, "/api/vote", {"pair": 1, "choice": "left", "rater": 1}, token="forged")[0] == 400
    assert _call(base, "/api/vote", {"pair": "1; DROP TABLE votes", "choice": "left"}, token=token)[0] == 400
    for path in ("/video/1/../../s.db", "/video/999/left", "/../s.db", "/video/1/middle"):
        assert _call(base, path)[0] == 404, path
    db = connect(study)
    assert db.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == PROMPTS


def test_invite_only_studies_take_each_invite_once(study):
    from magicvideo.study.db import add_invites
    from magicvideo.study.server import StudyServer

    srv = StudyServer(study, port=0, open_join=False)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        (invite,) = add_invites(connect(study), 1)
        assert _call(base, "/api/join", {"name": "cy"})[0] == 400
        assert _call(base, "/api/join", {"name": "cy", "invite": invite})[0] == 200
        assert _call(base, "/api/join", {"name": "di", "invite": invite})[0] == 400
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_judge_rater_prefers_the_true_clips_to_frozen_ones(study):
    from magicvideo.study.auto import auto_rate

    db = connect(study)
    assert auto_rate(db, study, progress=False) == PROMPTS
    assert auto_rate(db, study, progress=False) == 0  # it votes once per pair
    report = build_report(db)
    (entry,) = report["comparisons"]
    o = entry["overall"] if entry["system"] == "truth" else {"G": entry["overall"]["B"], "B": entry["overall"]["G"]}
    # a frozen clip gets no motion right; where the prompt asks for none, its steadier frames may win
    assert o["G"] >= 3 and o["G"] > o["B"], entry
    assert report["ranking"][0]["system"] == "truth"


def test_report_counts_ratio_ranking_agreement_and_chart(study, tmp_path):
    db = connect(study)
    pairs = db.execute("SELECT p.id, sl.name AS left FROM pairs p JOIN videos v ON v.id = p.left_video "
                       "JOIN systems sl ON sl.id = v.system ORDER BY p.id").fetchall()
    a, b = add_rater(db, "a"), add_rater(db, "b")
    truth_side = ["left" if p["left"] == "truth" else "right" for p in pairs]
    other_side = {"left": "right", "right": "left"}
    for k, p in enumerate(pairs):  # a: truth better on 3, same on 1; b: the same votes but one flipped
        va = truth_side[k] if k < 3 else "same"
        vote(db, a["id"], p["id"], va)
        vote(db, b["id"], p["id"], other_side[va] if k == 0 else va)
    report = build_report(db)
    (entry,) = report["comparisons"]
    assert entry["system"] == "truth" and entry["versus"] == "frozen"
    assert {k: entry["overall"][k] for k in "GSB"} == {"G": 5, "S": 2, "B": 1}
    assert entry["overall"]["ratio"] == pytest.approx(7 / 3)
    assert {k: entry["per_rater"]["a"][k] for k in "GSB"} == {"G": 3, "S": 1, "B": 0}
    lo, hi = entry["overall"]["ci"]
    assert lo <= 7 / 3 <= hi
    assert report["ranking"][0]["system"] == "truth" and report["ranking"][0]["strength"] > 0
    (agree,) = report["agreement"]
    assert agree["pairs"] == PROMPTS and agree["kappa"] == pytest.approx(kappa(
        [v for v in (truth_side[0], truth_side[1], truth_side[2], "same")],
        [other_side[truth_side[0]], truth_side[1], truth_side[2], "same"]))
    assert kappa(["left", "same"], ["left", "same"]) == 1.0
    plot(report, str(tmp_path / "chart.png"))
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_bradley_terry_orders_systems_by_wins_and_learns_ties():
    votes = [{"left": "x", "right": "y", "choice": "left"}] * 8 + [{"left": "y", "right": "z", "choice": "left"}] * 8
    votes += [{"left": "x", "right": "z", "choice": "same"}] * 2
    strengths, nu = bradley_terry(votes, ["x", "y", "z"])
    assert strengths[0] > strengths[1] > strengths[2] and abs(strengths.mean()) < 1e-9 and nu > 0


def test_cli_study_errors_are_one_line_and_exit_2(systems, tmp_path, capsys):
    from magicvideo.cli import main

    db = str(tmp_path / "s.db")
    for argv, message in ((["new", db, "--system", f"truth={systems['truth']}"], "at least two"),
                          (["report", str(tmp_path / "none.db")], "no study database"),
                          (["serve", str(tmp_path / "none.db")], "no study database"),
                          (["auto", str(tmp_path / "none.db")], "no study database"),
                          (["invite", str(tmp_path / "none.db")], "no study database")):
        assert main(["study", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    good = ["--system", f"truth={systems['truth']}", "--system", f"frozen={systems['frozen']}"]
    assert main(["study", "new", db, *good, "--pairs", "2", "--quiet"]) == 0
    assert "2 pairs" in capsys.readouterr().out
    assert main(["study", "report", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["votes"] == 0
    assert main(["study", "report", db, "--plot", str(tmp_path / "x.jpg")]) == 2


def test_a_rater_votes_in_a_real_browser_by_click_and_by_key(server, study):
    pytest.importorskip("selenium", reason="pip install selenium (the dev extra) for the browser test")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium / chromedriver: apt-get install chromium chromium-driver for the browser test")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = server
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        wait = WebDriverWait(browser, 20)
        browser.get(base + "/")
        browser.find_element(By.ID, "name").send_keys("eve")
        browser.find_element(By.ID, "join-button").click()
        wait.until(lambda b: b.find_element(By.ID, "prompt").text)
        # both videos load and play, together
        wait.until(lambda b: b.execute_script(
            "const [l, r] = [document.getElementById('left'), document.getElementById('right')];"
            "return l.readyState >= 3 && r.readyState >= 3 && !l.paused && !r.paused && l.currentTime > 0;"))
        first = browser.find_element(By.ID, "prompt").text
        browser.find_element(By.ID, "vote-left").click()
        wait.until(lambda b: "1 of" in b.find_element(By.ID, "status").text)
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        wait.until(lambda b: "2 of" in b.find_element(By.ID, "status").text)
        browser.refresh()  # pause and come back: the token is kept, the progress is the server's
        wait.until(lambda b: "2 of" in b.find_element(By.ID, "status").text)
        browser.find_element(By.TAG_NAME, "body").send_keys("2")
        wait.until(lambda b: "3 of" in b.find_element(By.ID, "status").text)
    finally:
        browser.quit()
    db = connect(study)
    rows = db.execute("SELECT p.prompt, v.choice FROM votes v JOIN pairs p ON p.id = v.pair JOIN raters r "
                      "ON r.id = v.rater WHERE r.name = 'eve' ORDER BY v.id").fetchall()
    assert [r["choice"] for r in rows] == ["left", "right", "same"] and rows[0]["prompt"] == first
