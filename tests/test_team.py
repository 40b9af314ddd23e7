"""A rating team (issue 21): an admin adds people with `python -m ftchat users add`, the app logs them in with
`--users FILE`, a rater's ratings carry their login whatever name they type, and every endpoint a rater may not use
is refused by the server, however it is called. With `--feedback-db postgresql://...` the team and its ratings are in
one database that several app processes serve.
"""
from __future__ import annotations

import io
import json
import shutil
import stat

import pytest
from conftest import ftchat_main
from test_hostile import login
from test_ui_api import AppProcess, make_workspace, value_of

ADMIN = ("ana", "ana-s-long-password")
RATER = ("bo", "bo-s-long-password")
# What a rater may call; every other API endpoint must answer "needs an admin". Adding an endpoint to the rater's
# list is a decision, so it is written here as well as in ftchat/ui/roles.py.
RATER_ALLOWED = {"chat", "next_prompt", "load_prompts", "rank_prompts", "vote_left", "vote_right", "vote_tie",
                 "vote_bothbad", "better_answer", "thumb", "clear_chat", "set_arena", "models", "my_progress",
                 "my_task"}
QUESTION = "What colour is the Zumo lamp?"


def add_user(workspace, name: str, role: str, password: str, monkeypatch, *where: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return ftchat_main("users", "add", name, "--role", role, "--password-stdin", "--workspace", workspace, *where)


def test_users_add_keeps_a_salted_hash_never_the_password(tmp_path, monkeypatch):
    from ftchat.users import Users

    code, out, err = add_user(tmp_path, *ADMIN[:1], "admin", ADMIN[1], monkeypatch)
    assert (code, err) == (0, "") and "added ana (admin)" in out
    assert add_user(tmp_path, "bo", "rater", ADMIN[1], monkeypatch)[0] == 0  # the same password as ana's
    path = tmp_path / "users.json"
    text = path.read_text()
    assert ADMIN[1] not in text and "long-password" not in text
    stored = json.loads(text)
    assert {name: entry["role"] for name, entry in stored.items()} == {"ana": "admin", "bo": "rater"}
    assert stored["ana"]["hash"].startswith("$argon2id$")
    assert stored["ana"]["hash"] != stored["bo"]["hash"]  # salted: one password, two hashes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.json", "users.json.lock"]  # no temporary file left

    users = Users(path)
    assert users.check(*ADMIN) and users.check("bo", ADMIN[1])
    assert not users.check("ana", "ana-s-long-passwordX") and not users.check("nobody", ADMIN[1])

    code, out, _ = ftchat_main("users", "list", "--workspace", tmp_path)
    assert code == 0 and out.split() == ["ana", "admin", "bo", "rater"]
    code, _, err = add_user(tmp_path, "cy", "rater", "short", monkeypatch)
    # cy among the stored names (two letters of a base64 salt are no sign of anything)
    assert code == 1 and "too short" in err and "cy" not in json.loads(path.read_text())
    assert add_user(tmp_path, "bo", "admin", RATER[1], monkeypatch)[1].startswith("updated bo (admin)")
    assert Users(path).check(*RATER) and not Users(path).check("bo", ADMIN[1])
    assert ftchat_main("users", "remove", "bo", "--workspace", tmp_path)[0] == 0
    assert not Users(path).check(*RATER) and Users(path).role("bo") is None


def test_a_team_in_postgresql_is_kept_in_its_users_table(postgres_db, tmp_path, monkeypatch):
    import psycopg

    from ftchat.users import open_users

    url = postgres_db
    code, out, err = add_user(tmp_path, *ADMIN[:1], "admin", ADMIN[1], monkeypatch, "--feedback-db", url)
    assert (code, err) == (0, "") and out == f"added ana (admin) in the users table of {url}\n"
    assert add_user(tmp_path, "bo", "rater", ADMIN[1], monkeypatch, "--feedback-db", url)[0] == 0
    with psycopg.connect(url) as db:
        stored = {name: (role, hashed) for name, role, hashed in db.execute("SELECT name, role, hash FROM users")}
    assert {name: role for name, (role, _) in stored.items()} == {"ana": "admin", "bo": "rater"}
    assert stored["ana"][1].startswith("$argon2id$") and stored["ana"][1] != stored["bo"][1]
    assert not any("long-password" in hashed for _, hashed in stored.values())
    assert list(tmp_path.iterdir()) == [], "no users.json, no feedback.sqlite"

    users = open_users(tmp_path, url)
    assert users.check(*ADMIN) and users.check("bo", ADMIN[1]) and users.role("bo") == "rater"
    assert not users.check("ana", "ana-s-long-passwordX") and not users.check("nobody", ADMIN[1])
    code, out, _ = ftchat_main("users", "list", "--workspace", tmp_path, "--feedback-db", url)
    assert code == 0 and out.split() == ["ana", "admin", "bo", "rater"]
    assert add_user(tmp_path, "bo", "admin", RATER[1], monkeypatch, "--feedback-db", url)[1].startswith(
        "updated bo (admin)")
    assert users.check(*RATER) and users.role("bo") == "admin"
    code, _, err = add_user(tmp_path, "cy", "rater", "short", monkeypatch, "--feedback-db", url)
    assert code == 1 and "too short" in err and users.role("cy") is None
    code, _, err = ftchat_main("users", "list", "--file", tmp_path / "team.json", "--feedback-db", url)
    assert code == 1 and "leave out the file" in err
    assert ftchat_main("users", "remove", "bo", "--feedback-db", url)[0] == 0
    assert not users.check(*RATER) and users.role("bo") is None
    code, _, err = ftchat_main("users", "remove", "bo", "--feedback-db", url)
    assert code == 1 and "no user 'bo' (users: ana)" in err


def test_an_app_with_an_empty_or_broken_users_file_does_not_start(tmp_path):
    from ftchat.ui.app import main

    broken = tmp_path / "users.json"
    broken.write_text("{not json")
    assert main(["--users", str(broken), "--workspace", str(tmp_path / "ws"), "--no-warm"]) == 2
    assert main(["--users", str(broken), "--auth", "a:bbbbbbbb", "--workspace", str(tmp_path / "ws")]) == 2


@pytest.fixture(scope="module")
def team_app(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("team")
    workspace = make_workspace(root, tiny_model_dir)
    shutil.copytree(tiny_model_dir, workspace / "models" / "second")  # a second model for a rating task
    from ftchat.users import Users

    users = Users(workspace / "users.json")
    users.add(ADMIN[0], "admin", ADMIN[1])
    users.add(RATER[0], "rater", RATER[1])
    process = AppProcess(workspace, "--users", str(workspace / "users.json"))
    process.tiny = f"base:{workspace / 'models' / 'tiny'}"
    yield process
    process.stop()


def chat(client, model: str):
    return client.predict(QUESTION, model, model, [], [], "", 0.0, 0.9, 8, api_name="/chat")


def test_only_the_team_logs_in(team_app):
    from ftchat.users import Users

    with pytest.raises(Exception):
        team_app.client()
    with pytest.raises(Exception):
        team_app.client(auth=(RATER[0], ADMIN[1]))  # another member's password
    users = Users(team_app.workspace / "users.json")
    users.add("cy", "rater", "cy-s-long-password")  # while the app runs
    cy = team_app.client(auth=("cy", "cy-s-long-password"))
    assert "Signed in as **cy**" in cy.predict(api_name="/my_progress")
    users.remove("cy")  # a removed user's open session can do nothing more
    with pytest.raises(Exception, match="cy is not a user of this app"):
        cy.predict(api_name="/my_progress")
    with pytest.raises(Exception):
        team_app.client(auth=("cy", "cy-s-long-password"))


def test_a_raters_ratings_carry_their_login_not_a_typed_name(team_app):
    from ftchat.feedback.store import FeedbackStore

    rater = team_app.client(auth=RATER)
    left, right, _ = chat(rater, team_app.tiny)
    *_, vote = rater.predict("ana", api_name="/vote_left")  # types the admin's name
    rater.predict("right", "The Zumo lamp is teal.", "ana", api_name="/better_answer")
    thumb = rater.predict("left", 1, True, left, team_app.tiny, "ana", api_name="/thumb")

    store = FeedbackStore.for_workspace(team_app.workspace)
    mine = store.ratings(rater=RATER[0])
    assert store.get(vote["id"])["rater"] == "bo" and store.get(thumb)["rater"] == "bo"
    assert sorted(r["kind"] for r in mine) == ["edit", "thumb", "vote"]
    assert store.ratings(rater="ana") == []
    assert rater.predict(api_name="/my_progress").startswith("Signed in as **bo**: 3 ratings so far (1 votes, 1 thumbs")

    admin = team_app.client(auth=ADMIN)
    rows = admin.predict("", "", "", "", "", api_name="/ratings")  # the admin reads the ratings table
    assert {row[3] for row in rows if row[0] in (vote["id"], thumb)} == {"bo"}


def test_two_apps_on_one_postgresql_database_serve_one_team(postgres_db, tmp_path, tiny_model_dir, monkeypatch):
    """Two app processes, each with a workspace of its own as on two machines, log in one team and keep one set of
    ratings: a rater's vote in one is in the other's ratings table, and a user added or removed counts in both."""
    from ftchat.users import open_users

    for name, role, password in ((ADMIN[0], "admin", ADMIN[1]), (RATER[0], "rater", RATER[1])):
        assert add_user(tmp_path, name, role, password, monkeypatch, "--feedback-db", postgres_db)[0] == 0
    apps = []
    try:
        for name in ("one", "two"):
            apps.append(AppProcess(make_workspace(tmp_path / name, tiny_model_dir), "--users", "--feedback-db",
                                   postgres_db))
        one, two = apps
        rater = one.client(auth=RATER)
        chat(rater, f"base:{one.workspace / 'models' / 'tiny'}")
        *_, vote = rater.predict("ana", api_name="/vote_left")
        admin = two.client(auth=ADMIN)
        rows = admin.predict("", "", "", "", "", api_name="/ratings")
        assert [row[3] for row in rows if row[0] == vote["id"]] == ["bo"]

        team = open_users(tmp_path, postgres_db)
        team.add("cy", "rater", "cy-s-long-password")  # while both run
        cy = two.client(auth=("cy", "cy-s-long-password"))
        assert "Signed in as **cy**" in cy.predict(api_name="/my_progress")
        team.remove("cy")
        with pytest.raises(Exception):
            one.client(auth=("cy", "cy-s-long-password"))
        for app in apps:
            assert not {"feedback.sqlite", "users.json"} & {p.name for p in app.workspace.iterdir()}
    finally:
        for app in apps:
            app.stop()


def refused(client, endpoint: str, args: list) -> str:
    with pytest.raises(Exception) as caught:
        client.predict(*args, api_name=f"/{endpoint}")
    return str(caught.value)


def test_every_endpoint_but_the_raters_is_refused_to_a_rater(team_app):
    rater, admin = team_app.client(auth=RATER), team_app.client(auth=ADMIN)
    endpoints = rater.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = {name.lstrip("/") for name in endpoints}
    assert RATER_ALLOWED <= names
    admin_only = sorted(names - RATER_ALLOWED)
    # the admin's work the issue names is among them
    assert {"start_training", "cancel_run", "export_ratings", "delete_rating", "import_ratings", "start_round",
            "judge_parent", "upload", "create_task", "task_status"} <= set(admin_only)

    for name in admin_only:
        args = []
        for parameter in endpoints[f"/{name}"]["parameters"]:
            if parameter["component"] == "File":
                args.append(None)  # no download of the example file: the call must be refused before any work
            else:
                args.append(parameter["parameter_default"] if parameter["parameter_has_default"]
                            else parameter["example_input"])
        message = refused(rater, name, args)
        assert "bo is a rater" in message and f"/{name} needs an admin" in message, (name, message)

    # refused means not done: a rater's delete leaves the rating live, a rater's training starts no run
    from ftchat.feedback.store import FeedbackStore

    store = FeedbackStore.for_workspace(team_app.workspace)
    chat(rater, team_app.tiny)
    *_, vote = rater.predict("", api_name="/vote_tie")
    assert "needs an admin" in refused(rater, "delete_rating", [vote["id"], "mine", "", "", "", "", ""])
    assert vote["id"] in [r["id"] for r in store.ratings()]
    sample = admin.predict("quorvane_support.jsonl", api_name="/use_sample")[1][0]["stored_as"]
    values = dict(base_model=str(team_app.workspace / "models" / "tiny"), data=[sample], train_method="sft",
                  technique="lora", steps=1, eval_steps=1, eval_split=0.1, learning_rate=0, name="by-a-rater",
                  batch=4)
    with pytest.raises(Exception, match="needs an admin"):
        rater.predict(**values, api_name="/start_training")
    assert not (team_app.workspace / "runs" / "by-a-rater").exists()

    # the rater's own endpoints answer, and the admin may do what the rater may not
    assert team_app.tiny in [v for _, v in rater.predict(None, None, api_name="/models")[2]]
    assert admin.predict(api_name="/list_runs")[0]["headers"][0] == "run"
    admin.predict(vote["id"], "a test vote", "", "", "", "", "", api_name="/delete_rating")
    assert vote["id"] not in [r["id"] for r in store.ratings()]


def test_wrong_passwords_for_a_team_member_are_locked_out(team_app):
    attacker = "127.0.0.3"
    codes = [login(team_app.url, RATER[0], f"guess-{i}", attacker).status for i in range(7)]
    assert codes[:5] == [400] * 5 and set(codes[5:]) == {429}, codes
    assert login(team_app.url, *RATER, attacker).status == 429  # the right password waits too
    assert login(team_app.url, *RATER, "127.0.0.1").status == 200


# -- how the team agrees (ftchat/feedback/agreement.py) ----------------------------------------------------------

def vote(rater: str, prompt: str, left: str, right: str, winner: str, when: float = 0.0) -> dict:
    return {"kind": "vote", "rater": rater, "conversation": [{"role": "user", "content": prompt}], "model_a": left,
            "model_b": right, "winner": winner, "time": when}


def test_cohen_and_fleiss_kappa_match_worked_examples():
    from ftchat.feedback.agreement import cohen_kappa, fleiss_kappa

    # Wikipedia's Cohen example: 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15: kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["tie"] * 3, ["tie"] * 3) is None  # chance agreement is certain: undefined, not 1 or 0
    # Wikipedia's Fleiss example: 10 subjects, 14 raters, 5 categories: kappa 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1], [7, 7, 0, 0, 0],
             [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    items = [[category for category, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.2099, abs=5e-4)


def test_agreement_counts_shared_prompts_whatever_pane_each_model_was_in():
    from ftchat.feedback.agreement import team_agreement

    rows = []
    for i in range(6):
        prompt = f"question {i}"
        rows.append(vote("ana", prompt, "run-1", "run-2", "a"))  # ana: run-1 wins every time, from the left
        rows.append(vote("bo", prompt, "run-2", "run-1", "b"))  # bo: the same verdict with the sides swapped
        rows.append(vote("cy", prompt, "run-1", "run-2", "b" if i % 2 else "a"))  # cy: half against them
    rows.append(vote("bo", "question 0", "run-2", "run-1", "a", when=-1))  # an older vote: the later one counts
    rows.append({"kind": "thumb", "rater": "cy", "conversation": [], "model_a": "run-1", "thumb": 1})
    rows.append(vote(None, "question 0", "run-1", "run-2", "b"))  # no rater: left out
    team = team_agreement(rows)

    by_name = {r.rater: r for r in team.raters}
    assert [(r.votes, r.thumbs, r.shared_items) for r in team.raters] == [(7, 0, 6), (6, 0, 6), (6, 1, 6)]
    assert (by_name["ana"].left_share, by_name["bo"].left_share) == (1.0, 1 / 7)
    pairs = {(p.rater_a, p.rater_b): p for p in team.pairs}
    assert (pairs["ana", "bo"].shared, pairs["ana", "bo"].agreed) == (6, 6)
    assert pairs["ana", "bo"].kappa is None  # both always said run-1: agreement by chance is certain
    assert (pairs["ana", "cy"].agreed, pairs["bo", "cy"].agreed) == (3, 3)
    assert pairs["ana", "cy"].kappa == pytest.approx(0.0)  # cy agrees with them only as often as chance would
    assert team.items_shared == 6
    # 18 votes on 6 prompts: per prompt 3 raters, all agreeing on 3 prompts, two of three on the others
    assert team.fleiss_kappa == pytest.approx(((3 * 6 + 3 * 2) / 36 - ((15 / 18) ** 2 + (3 / 18) ** 2))
                                              / (1 - ((15 / 18) ** 2 + (3 / 18) ** 2)))
    assert (by_name["cy"].agreement_with_others, by_name["cy"].others_agreement) == (0.5, 1.0)
    assert by_name["cy"].flags == ["disagrees with the others: agrees with them on 50%, they with each other on "
                                   "100% of 6 shared prompts"]
    # ana always names run-1, as most do: her kappa against the others is 0 (chance explains a constant answer),
    # yet she agrees with them more often than they agree with each other, and is not flagged
    assert by_name["ana"].kappa_with_others == pytest.approx(0.0) and by_name["ana"].agreement_with_others == 0.75
    assert not by_name["ana"].flags and not by_name["bo"].flags  # too few decisive votes to call ana one-sided


def test_a_rater_who_always_picks_the_left_pane_is_flagged_not_one_who_prefers_a_model_that_kept_its_side():
    from ftchat.feedback.agreement import team_agreement

    def pair(i):  # three pairs of models, each seen both ways round
        return (f"m{i % 3}", f"m{i % 3 + 1}") if i % 2 else (f"m{i % 3 + 1}", f"m{i % 3}")

    rows = [vote("dee", f"q{i}", *pair(i), "a") for i in range(12)]  # the left pane, whichever model is there
    rows += [vote("eve", f"q{i}", *pair(i), "a" if i % 2 else "b") for i in range(12)]  # m0 over m1 (etc.), any side
    # fay: the round wins every time, and it sat on the right every time (the Chat tab opens parent | round)
    rows += [vote("fay", f"q{i}", "parent", "round", "b") for i in range(12)]
    # gus: the left pane every time in arena mode, which shuffles the sides: that is a side, not a model
    rows += [dict(vote("gus", f"q{i}", "parent", "round", "a"), anonymous=1) for i in range(12)]
    flags = {r.rater: r.flags for r in team_agreement(rows).raters}
    assert flags["dee"] and "left pane in 100% of 12 decisive votes where the models changed sides" in flags["dee"][-1]
    assert flags["gus"] and "left pane in 100% of 12" in flags["gus"][-1]
    assert not any("pane" in flag for flag in flags["eve"] + flags["fay"])


def test_the_admin_sees_each_raters_count_and_how_they_agree(team_app):
    from ftchat.users import Users

    users = Users(team_app.workspace / "users.json")
    for name in ("dana", "eli"):
        users.add(name, "rater", f"{name}-s-long-password")
        client = team_app.client(auth=(name, f"{name}-s-long-password"))
        client.predict("Which planet is red?", team_app.tiny, team_app.tiny, [], [], "", 0.0, 0.9, 8,
                       api_name="/chat")
        client.predict("", api_name="/vote_right")
        assert "needs an admin" in refused(client, "raters", [])

    admin = team_app.client(auth=ADMIN)
    summary = admin.predict(api_name="/raters")
    pair = next(p for p in summary["pairs"] if (p["rater_a"], p["rater_b"]) == ("dana", "eli"))
    assert (pair["shared"], pair["agreed"]) == (1, 1)
    by_name = {r["rater"]: r for r in summary["raters"]}
    assert (by_name["dana"]["votes"], by_name["dana"]["left_share"], by_name["dana"]["shared_items"]) == (1, 0.0, 1)
    outputs = admin.predict("", "", "", "", "", False, None, None, "dpo", api_name="/refresh_feedback")
    text, rater_rows, pair_rows = outputs[-3:]
    assert "prompt voted on by two or more" in text or "prompts voted on by two or more" in text
    assert ["dana", 1, 0, 0, "0%", 1] == rater_rows["data"][[r[0] for r in rater_rows["data"]].index("dana")][:6]
    assert ["dana", "eli", 1, "100%"] in [row[:4] for row in pair_rows["data"]]


def test_a_rating_task_brings_each_rater_their_next_prompt_and_counts_their_votes(team_app):
    from ftchat.feedback.store import FeedbackStore

    rater, admin = team_app.client(auth=RATER), team_app.client(auth=ADMIN)
    second = f"base:{team_app.workspace / 'models' / 'second'}"
    typed = "Who makes the Zumo lamp?\nWhat colour is the Zumo lamp?\nHow bright is the Zumo lamp?"
    task_args = ["zumo-lamp", typed, None, [team_app.tiny, second], [RATER[0]], 0.0]
    assert "needs an admin" in refused(rater, "create_task", task_args)
    store = FeedbackStore.for_workspace(team_app.workspace)
    assert store.tasks() == []  # refused means not made

    created, _ = admin.predict(*task_args, api_name="/create_task")
    assert created.startswith("✓ task **zumo-lamp**: 3 prompts for bo (3)")
    outputs = rater.predict("", api_name="/my_task")
    # the message box, system prompt, both panes (empty: a new conversation), both pickers, the task button, the
    # progress line
    message, left, right, progress = outputs[0], value_of(outputs[4]), value_of(outputs[5]), outputs[-1]
    assert progress == "Task **zumo-lamp**: 0 of 3 done"
    assert message in typed.splitlines() and {left, right} == {team_app.tiny, second}
    first = message

    # the rater answers it with the task's models (as the page sends it) and votes: 1 of 3 done
    rater.predict(message, left, right, [], [], "", 0.0, 0.9, 8, api_name="/chat")
    *_, vote = rater.predict("", api_name="/vote_left")
    assert vote["task_item"] is not None
    outputs = rater.predict("", api_name="/my_task")
    assert outputs[-1] == "Task **zumo-lamp**: 1 of 3 done" and outputs[0] != first
    # a vote on another question (plain chatting) does not count
    rater.predict("Something else?", left, right, [], [], "", 0.0, 0.9, 8, api_name="/chat")
    *_, other = rater.predict("", api_name="/vote_right")
    assert other["task_item"] is None and rater.predict("", api_name="/my_task")[-1].endswith("1 of 3 done")

    summary, table = admin.predict("zumo-lamp", api_name="/task_status")
    assert "zumo-lamp**: 1 of 3 items done" in summary
    assert table["data"][0][:4] == ["bo", 1, 3, "33%"]
    assert [r["id"] for r in store.ratings(task=store.task("zumo-lamp")["id"])] == [vote["id"]]


def fetch_as(url: str, user: str, password: str, path: str) -> int:
    """Log in as a browser does (a session cookie) and fetch a file the app serves; the HTTP status."""
    import http.cookiejar
    import urllib.error
    import urllib.parse
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    opener.open(url + "login", urllib.parse.urlencode({"username": user, "password": password}).encode(), timeout=30)
    try:
        with opener.open(url + "gradio_api/file=" + urllib.parse.quote(path), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_export_file_is_served_to_admins_only(team_app):
    rater, admin = team_app.client(auth=RATER), team_app.client(auth=ADMIN)
    chat(rater, team_app.tiny)
    rater.predict("", api_name="/vote_left")
    exported = admin.predict("ratings", "", api_name="/export_ratings")[1]
    path = exported.split("`")[1]
    assert path.startswith(str(team_app.workspace / "exports"))
    assert fetch_as(team_app.url, *RATER, path) == 403
    assert fetch_as(team_app.url, *ADMIN, path) == 200


def call_page_event(url: str, user: str, password: str, dependency: dict, data: list | None = None) -> dict:
    """Run one of the page's events as the browser does (no API name needed: queue/join with its index) and return
    Gradio's last message about it."""
    import http.cookiejar
    import urllib.parse
    import urllib.request
    import uuid

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    opener.open(url + "login", urllib.parse.urlencode({"username": user, "password": password}).encode(), timeout=30)
    session = uuid.uuid4().hex
    body = {"data": [None] * len(dependency["inputs"]) if data is None else data, "fn_index": dependency["id"],
            "session_hash": session, "event_data": None, "trigger_id": None}
    opener.open(urllib.request.Request(url + "gradio_api/queue/join", json.dumps(body).encode(),
                                       {"Content-Type": "application/json"}), timeout=30).read()
    with opener.open(url + f"gradio_api/queue/data?session_hash={session}", timeout=120) as stream:
        for line in stream:
            if line.startswith(b"data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"no answer to event {dependency['api_name']}")


def test_the_admin_tabs_page_events_are_refused_to_a_rater_too(team_app):
    import re

    dependencies = team_app.client(auth=ADMIN).config["dependencies"]
    page_only = [d for d in dependencies if d["api_visibility"] == "private" and d["backend_fn"]]
    # events of the Data, Train and Feedback tabs that the page fires itself (their names are the handlers')
    admin_events = [d for d in page_only if re.sub(r"_\d+$", "", d["api_name"]) in
                    {"refresh_all", "filters_and_table", "judge_default", "on_data", "plan", "refresh_choices",
                     "export", "replot", "round_readiness", "report_markdown", "task_view", "board_view"}]
    assert len(admin_events) >= 20
    for dependency in admin_events:
        answer = call_page_event(team_app.url, *RATER, dependency)
        assert answer["success"] is False and "needs an admin" in answer["output"]["error"], (dependency, answer)
    refresh = next(d for d in admin_events if d["api_name"].startswith("refresh_all"))
    answer = call_page_event(team_app.url, *ADMIN, refresh,
                             ["", "", "", "", "", False, None, None, "dpo", False, None, False])
    assert answer["success"] is True, answer
    # the Chat tab's own page events answer a rater: opening the page shows who is rating
    who = next(d for d in page_only if d["api_name"] == "who_rates")
    answer = call_page_event(team_app.url, *RATER, who)
    assert answer["success"] is True and answer["output"]["data"][0]["value"] == "bo"
    # and hides the admin's tabs from a rater (the refusals above are what keeps them out; tests/test_browser_team.py
    # reads the tab bar a rater sees)
    tabs = next(d for d in page_only if d["api_name"] == "show_tabs")
    chosen, style = call_page_event(team_app.url, *RATER, tabs)["output"]["data"]
    assert chosen["selected"] == "chat"
    assert all(f"[data-tab-id={tab}]" in style for tab in ("data", "train", "feedback"))
    assert "#main-tabs { visibility: visible !important; }" in style  # the bar, kept off screen until now, shows
    _, style = call_page_event(team_app.url, *ADMIN, tabs)["output"]["data"]
    assert style == "<style>#main-tabs { visibility: visible !important; }</style>"  # all of it: no tab hidden


def test_the_shell_shows_the_same_agreement(tmp_path, feedback_db):
    from ftchat.feedback.store import FeedbackStore

    store = FeedbackStore.for_workspace(tmp_path, feedback_db)
    conversation = [{"role": "user", "content": "Which planet is red?"}]
    for rater, winner in (("ana", "a"), ("bo", "a"), ("cy", "b")):
        store.add_vote(conversation, "run-1", "run-2", "Mars.", "Venus.", winner, rater=rater)
    where = ["--feedback-db", feedback_db] if feedback_db else []
    code, out, err = ftchat_main("feedback", "raters", "--json", "--workspace", tmp_path, *where)
    assert (code, err) == (0, "")
    team = json.loads(out)
    assert team["items_shared"] == 1 and [r["rater"] for r in team["raters"]] == ["ana", "bo", "cy"]
    assert {(p["rater_a"], p["rater_b"]): p["agreed"] for p in team["pairs"]} == \
        {("ana", "bo"): 1, ("ana", "cy"): 0, ("bo", "cy"): 0}
    code, out, _ = ftchat_main("feedback", "raters", "--workspace", tmp_path, *where)
    assert code == 0 and "ana / bo: 1 of 1 shared prompts agree" in out and "team: 1 prompts voted on" in out


def test_a_change_to_the_users_waits_for_one_under_way(tmp_path):
    """Two admins adding people at once both keep theirs: a change holds users.json.lock while it reads and writes
    (without it, 8 threads adding at once lost 4 of 40 names in a trial run)."""
    import fcntl
    import threading
    import time

    from ftchat.users import Users

    path = tmp_path / "users.json"
    Users(path).add("ana", "admin", ADMIN[1])
    with open(tmp_path / "users.json.lock", "a") as other_change:
        fcntl.flock(other_change, fcntl.LOCK_EX)  # another process is changing the file
        adding = threading.Thread(target=Users(path).add, args=("bo", "rater", RATER[1]))
        adding.start()
        time.sleep(1.0)  # the hash takes well under a second; the write waits for the lock
        assert adding.is_alive() and sorted(Users(path).read()) == ["ana"]
        fcntl.flock(other_change, fcntl.LOCK_UN)
        adding.join(30)
    assert sorted(Users(path).read()) == ["ana", "bo"]


def test_the_admin_can_leave_a_rater_who_votes_at_random_out_of_the_leaderboard_and_the_round(team_app):
    """Three raters vote on the same 20 prompts: two always for zumo-good, whichever pane it is in; the third flips
    a coin (seeded). With the option on, the leaderboard and the round count the two careful raters' 40 votes."""
    import random

    from ftchat.feedback.store import FeedbackStore

    store = FeedbackStore.for_workspace(team_app.workspace)
    coin = random.Random(3)
    for i in range(20):
        left, right = ("zumo-good", "zumo-plain") if i % 2 else ("zumo-plain", "zumo-good")
        for rater in ("x-ana", "x-bo", "x-cy"):
            winner = coin.choice("ab") if rater == "x-cy" else ("a" if left == "zumo-good" else "b")
            store.add_vote([{"role": "user", "content": f"Zumo question {i}?"}], left, right, "one", "two", winner,
                           rater=rater)
    admin = team_app.client(auth=ADMIN)
    flags = {r["rater"]: r["flags"] for r in admin.predict(api_name="/raters")["raters"]}
    assert flags["x-cy"] and not flags["x-ana"] and not flags["x-bo"]

    def votes_of(board) -> dict:
        return {row[1]: row[4] for row in board["data"]}

    everyone, *_ = admin.predict(False, False, api_name="/leaderboard")
    careful, *_ = admin.predict(False, True, api_name="/leaderboard")
    assert votes_of(everyone)["zumo-good"] == 60 and votes_of(careful)["zumo-good"] == 40
    assert [row[1] for row in careful["data"]].index("zumo-good") < [row[1] for row in careful["data"]].index(
        "zumo-plain")
    assert "give 60 DPO pairs" in admin.predict("zumo-good", "dpo", False, api_name="/round_readiness")
    assert "give 40 DPO pairs" in admin.predict("zumo-good", "dpo", True, api_name="/round_readiness")
