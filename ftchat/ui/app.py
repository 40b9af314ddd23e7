"""The ftchat app: Data → Train → Chat in one browser tab.

`main()` parses the command line, refuses to serve beyond this machine without a password, builds the page and
warms the bundled model in the background. Gradio is imported only once the arguments are checked, and
torch / transformers only inside handlers, so the page answers within seconds.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

import ftchat.ui  # noqa: F401  (sets the no-analytics environment before gradio is imported)
from ftchat import run_queue
from ftchat.feedback.store import FeedbackError, locate
from ftchat.login import ThrottledLogin, is_loopback, password_check, trust_forwarded_headers
from ftchat.ui.context import AppContext
from ftchat.users import UsersError, open_users
from ftchat.workspace import DEFAULT_MAX_UPLOAD_MB, Workspace

log = logging.getLogger("ftchat.ui")

UPLOAD_COPY_AGE_S = 3600  # how long Gradio's copy of an upload may stay once stored in the workspace
MAIN_TABS = "main-tabs"
CSS = """
.run-progress { padding: 10px 12px; border: 1px solid var(--border-color-primary); border-radius: 8px; }
.run-progress .bar { height: 10px; margin-top: 8px; background: var(--background-fill-secondary);
                     border-radius: 5px; overflow: hidden; }
.run-progress .bar > div { height: 100%; transition: width .5s; }
.run-error { margin-top: 8px; color: #dc2626; white-space: pre-wrap; }
#comparison [role=gridcell], #comparison td { overflow-wrap: anywhere; }
footer { display: none !important; }
#tab-rules { display: none; }
#vote-row button { min-height: 44px; }
/* the panes' labels float over their top edge: the replies scroll below them, not under them */
#left-chat .bubble-wrap, #right-chat .bubble-wrap { margin-top: 40px; height: calc(100% - 40px); padding-top: 8px; }
#vote-status, #queue-progress { min-height: 1.5em; }
.lineage-chain { display: flex; flex-wrap: wrap; align-items: stretch; gap: 6px; }
.lineage-step { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 12px; min-width: 150px; }
.lineage-base { background: var(--background-fill-secondary); }
.lineage-round { border-color: #6366f1; }
.lineage-kind { font-size: 11px; text-transform: uppercase; letter-spacing: .05em; opacity: .7; }
.lineage-name { font-weight: 600; overflow-wrap: anywhere; }
.lineage-detail { font-size: 13px; }
.lineage-judged { margin-top: 2px; color: #4f46e5; }
.lineage-arrow { align-self: center; font-size: 20px; opacity: .6; }
"""


def url_host(host: str) -> str:
    """The host as it goes into a URL (and into Gradio's server_name, which builds its own URL from it): an IPv6
    address in brackets; a wildcard address as the loopback address a local browser can open."""
    bare = host.strip("[]")
    if bare in ("0.0.0.0", "::"):
        return "127.0.0.1" if bare == "0.0.0.0" else "[::1]"
    return f"[{bare}]" if ":" in bare else bare


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("error: --auth takes USER:PASS, e.g. --auth alice:correct-horse-battery")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description="Fine-tune an LLM from the browser.")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--workspace", default="./workspace", help="where uploads, models and runs are kept")
    parser.add_argument("--auth", default=None, metavar="USER:PASS",
                        help="require this login (needed off loopback, or --users); that one user is an admin")
    parser.add_argument("--users", nargs="?", const="", default=None, metavar="FILE",
                        help="log in a rating team: raters chat and rate, admins do everything. Its users are in "
                             "FILE, else WORKSPACE/users.json, or with --feedback-db postgresql://... in that "
                             "database (`python -m ftchat users add NAME --role admin|rater` adds them)")
    parser.add_argument("--feedback-db", default=None, metavar="URL",
                        help="keep the ratings (and the --users team) in this PostgreSQL database, "
                             "postgresql://user@host:port/db, so several app processes serve one team (default: "
                             "WORKSPACE/feedback.sqlite)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest training file accepted (default: {DEFAULT_MAX_UPLOAD_MB:.0f})")
    parser.add_argument("--no-warm", action="store_true", help="do not prepare the bundled model at start-up")
    parser.add_argument("--trust-proxy", action="store_true",
                        help="behind a reverse proxy on this machine: take X-Forwarded-For from it as the client's "
                             "address (for the login lockout); off, a client could claim any address")
    parser.add_argument("--parallel-runs", type=int, default=None, metavar="N",
                        help="let N runs train at once (default: one per GPU, one on a CPU; the others wait in the "
                             "queue); kept for the workspace")
    return parser


def everyone_admin(user: str | None) -> str:
    """The roles of an app without logins: the one person at this machine may do everything."""
    return "admin"


def one_admin(name: str):
    """The roles under --auth USER:PASS: that user is an admin."""
    return lambda user: "admin" if user == name else None


def build_app(workspace, ctx=None, role_of=everyone_admin):
    """The page: a gr.Blocks with the Data, Train, Chat and Feedback tabs wired to each other; each handler refused
    to a caller whose role (`role_of(login name)`) may not call it. Its load event shows each person their tabs
    (with a team's logins, main() keeps them off screen until then: roles.closed_page_css)."""
    # gradio and the tabs (which import it) load here, after the arguments are checked: `--help` and a refused
    # --host answer in a blink
    import gradio as gr

    from ftchat.ui import chat_tab, data_tab, export_panel, feedback_tab, roles, train_tab

    if ctx is None:
        ctx = AppContext(workspace if isinstance(workspace, Workspace) else Workspace(workspace))
    # Gradio keeps an upload under a folder named by its bytes, shared by every upload of the same file: a handler
    # that deleted its copy could pull it from under another upload still being read. Gradio's own cache cleaning
    # removes only this app's copies, once they are an hour old, and all of them when the app stops.
    with gr.Blocks(title="ftchat", delete_cache=(600, UPLOAD_COPY_AGE_S)) as demo:
        gr.Markdown("## ftchat — fine-tune a model and chat with it\n"
                    "**1. Data:** upload a file or use a sample · **2. Train:** start a run and watch it · "
                    "**3. Chat:** compare the base with your tuned model and rate the answers · "
                    "**4. Feedback:** see who wins and train the next round from the votes.")
        # style rules for the tabs, set by the load event: on screen, and a rater's without the admin tabs
        tab_rules = gr.HTML("", elem_id="tab-rules", padding=False)
        with gr.Tabs(elem_id=MAIN_TABS) as tabs:
            with gr.Tab("1. Data", id="data") as data_page:
                data = data_tab.build(ctx, demo)
            with gr.Tab("2. Train", id="train") as train_page:
                train = train_tab.build(ctx, demo, train_page)
                exporter = export_panel.build(ctx)
                train_page.select(exporter.refresh, outputs=[exporter.run], api_visibility="private")
            with gr.Tab("3. Chat", id="chat") as chat_page:
                chat = chat_tab.build(ctx, demo, chat_page)
            with gr.Tab("4. Feedback", id="feedback") as feedback_page:
                feedback = feedback_tab.build(ctx, demo, feedback_page)
        # "Rate these next" in the Feedback tab: its prompts become the Chat tab's queue, on the run and its parent.
        feedback.rate_next.then(
            lambda text, pair: (text, gr.Dropdown(choices=ctx.engine().choices(), value=pair[0]),
                                gr.Dropdown(choices=ctx.engine().choices(), value=pair[1]), gr.Tabs(selected="chat"),
                                gr.Accordion(open=True)),
            inputs=[feedback.next_prompts, feedback.next_pair],
            outputs=[chat.queue_text, chat.left_model, chat.right_model, tabs, chat.queue_panel],
            api_visibility="private",
        ).then(chat.load_typed, inputs=[chat.queue_text], outputs=[chat.queue, chat.queue_progress],
               api_visibility="private")
        # New uploads become the Train tab's selected data.
        for event in data.events:
            event.then(train.refresh_choices, inputs=[data.loaded_paths], outputs=[train.datasets],
                       api_visibility="private")
        demo.load(roles.page_for(role_of, MAIN_TABS), outputs=[tabs, tab_rules], api_visibility="private")
    roles.enforce(demo, role_of)  # last: every handler above, whoever wired it
    demo.ctx = ctx
    return demo


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    auth = parse_auth(args.auth)
    users = None
    try:
        if args.feedback_db:
            locate(args.feedback_db)
        if args.users is not None:
            users = open_users(args.workspace, args.feedback_db, args.users)
            team = users.read()
    except (FeedbackError, UsersError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if auth and users is not None:
        print("error: use --auth USER:PASS (one admin) or --users (a team), not both: add yourself to the team "
              f"with `python -m ftchat users add NAME --role admin {users.option}`.", file=sys.stderr)
        return 2
    if users is not None:
        if not team:
            print(f"error: {users.where} holds no users: add one with "
                  f"`python -m ftchat users add NAME --role admin {users.option}`.", file=sys.stderr)
            return 2
        if not any(entry["role"] == "admin" for entry in team.values()):
            print(f"warning: {users.where} has no admin: nobody can train, export or start rounds until "
                  f"`python -m ftchat users add NAME --role admin {users.option}` makes one.", file=sys.stderr)
    if not is_loopback(args.host) and auth is None and users is None:
        print(f"error: refusing to serve on {args.host} without a login: anyone who can reach this machine could "
              f"read your data and run training on it. Add one with --auth user:pass "
              f"(e.g. python app.py --host {args.host} --auth alice:a-long-password) or a team with --users FILE, "
              f"or serve on this machine only with --host 127.0.0.1.", file=sys.stderr)
        return 2
    if users is not None:
        login, role_of = users.check, users.role
    elif auth is not None:
        login, role_of = password_check(*auth), one_admin(auth[0])
    else:
        login, role_of = None, everyone_admin
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx = AppContext(Workspace(args.workspace, max_upload_mb=args.max_upload_mb), args.feedback_db)
    ctx.users = users
    if args.parallel_runs is not None:
        run_queue.set_parallel_runs(ctx.workspace.runs_dir, args.parallel_runs)
    demo = build_app(ctx.workspace, ctx, role_of)
    import gradio as gr  # see build_app

    theme = gr.themes.Soft(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "Consolas", "monospace"])
    from starlette.middleware import Middleware  # comes with gradio

    from ftchat.ui import roles

    exports = str(ctx.workspace.root / "exports")

    bare = args.host.strip("[]")
    trust_forwarded_headers(args.trust_proxy)
    demo.launch(
        # Gradio puts server_name into the URL it checks itself with: an IPv6 address needs its brackets there
        server_name=f"[{bare}]" if ":" in bare else bare, server_port=args.port,
        auth=login, theme=theme, css=CSS + (roles.closed_page_css(MAIN_TABS) if users is not None else ""),
        ssr_mode=False,
        show_error=True, prevent_thread_lock=True, max_file_size=ctx.workspace.max_upload_bytes,
        footer_links=[], mcp_server=False, pwa=False, enable_monitoring=False,
        app_kwargs={"middleware": [Middleware(ThrottledLogin),
                                   Middleware(roles.AdminOnlyFiles, folders=[exports], role_of=role_of)]}
        if login else None,
        allowed_paths=[exports],  # rating and model exports offered for download (to admins: AdminOnlyFiles)
    )
    print(f"ftchat: open http://{url_host(args.host)}:{args.port} (workspace: {ctx.workspace.root})", flush=True)
    if not args.no_warm:
        threading.Thread(target=ctx.warm, name="warm-bundled-model", daemon=True).start()
    # SIGTERM (a service manager, `kill`) stops the app as Ctrl-C does: Gradio closes its server, and its shutdown
    # deletes the upload copies it kept. demo.close(), not block_thread's bare server close: it also ends the pages'
    # heartbeats, which would hold the server open past its wait, and the process would exit before that cleaning.
    signal.signal(signal.SIGTERM, stop_as_interrupted)
    try:
        while demo.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        demo.close()
    return 0


def stop_as_interrupted(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
