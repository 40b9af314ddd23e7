"""Who may call what: every handler of the page is refused to a rater unless it is on the rater's list.

`enforce` wraps each event function of the finished page, so a handler added later is an admin's until someone puts
it on RATER_ENDPOINTS: forgetting refuses, it never opens. The check runs on the server for each call, whether from
the page, gradio_client or a hand-made request; hiding tabs (`page_for`) only tidies the rater's page.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import urllib.parse
from http.cookies import SimpleCookie

import gradio as gr
from gradio.context import LocalContext  # the request of the event being run; Gradio sets it around every call

ADMIN, RATER = "admin", "rater"
# The API endpoints a rater may call: chatting, the prompt queue, rating, their own progress and their next prompt of
# a rating task (creating a task and reading its report are an admin's).
RATER_ENDPOINTS = frozenset({
    "chat", "next_prompt", "load_prompts", "rank_prompts", "vote_left", "vote_right", "vote_tie", "vote_bothbad",
    "better_answer", "thumb", "clear_chat", "set_arena", "models", "my_progress", "my_task",
})
# Modules whose page-only events (no API name: streaming steps, thumbs, refreshing the Chat tab's lists) a rater's
# page needs.
RATER_PAGES = frozenset({"ftchat.ui.chat_tab", __name__})
ADMIN_TABS = ("data", "train", "feedback")


def logged_in() -> str | None:
    """The name the current event's caller logged in with; None when the app asks for no login."""
    request = LocalContext.request.get(None)
    return getattr(request, "username", None) or None


def rater_may_call(block_fn) -> bool:
    if block_fn.api_visibility != "private":
        return block_fn.api_name in RATER_ENDPOINTS
    return getattr(block_fn.fn, "__module__", None) in RATER_PAGES


def enforce(demo: gr.Blocks, role_of) -> None:
    """Wrap every event function of `demo` with a role check; `role_of(user name or None)` -> 'admin', 'rater' or
    None (no access)."""
    for block_fn in demo.fns.values():
        if block_fn.fn is None or getattr(block_fn.fn, "ftchat_guarded", False):
            continue
        allowed = (ADMIN, RATER) if rater_may_call(block_fn) else (ADMIN,)
        what = block_fn.api_name if block_fn.api_visibility != "private" else None
        block_fn.fn = guarded(block_fn.fn, allowed, role_of, what)


def refusal(user: str | None, role: str | None, what: str | None) -> gr.Error:
    action = f"/{what}" if what else "this"
    text = (f"{user} is not a user of this app" if role is None else f"{user} is a {role}") + \
        f": {action} needs an admin. Ask an admin of this app to do it, or to make you one."
    # page-only events (a rater's page loading an admin tab's lists) fail quietly; API calls say why
    return gr.Error(text, visible=what is not None, print_exception=False)


def guarded(fn, allowed: tuple[str, ...], role_of, what: str | None):
    """`fn` that first checks the caller's role; the same signature, so Gradio passes it the same arguments."""
    def check():
        user = logged_in()
        role = role_of(user)
        if role not in allowed:
            raise refusal(user, role, what)

    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            check()
            async for item in fn(*args, **kwargs):
                yield item
    elif inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            check()
            return await fn(*args, **kwargs)
    elif inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            check()
            yield from fn(*args, **kwargs)
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            check()
            return fn(*args, **kwargs)
    wrapper.ftchat_guarded = True
    return wrapper


def closed_page_css(tabs_id: str) -> str:
    """CSS for the page's head (launch's css) that keeps the tabs `tabs_id` off screen until page_for has run: an app
    with a team's logins builds one page for everyone, and a rater must not see, even for a moment, the admin's tabs.
    In the head, not in a component: the tab bar may be drawn before a component's script has arrived."""
    return f"#{tabs_id} {{ visibility: hidden; }}"


def open_page_style(tabs_id: str, admin: bool) -> str:
    """The style rules that put the tabs `tabs_id` on screen, for a rater without the ADMIN_TABS' buttons (Gradio
    6.31 applies a Tab's visible= only when the page is built, never from an event's update). One block, so the bar
    never shows with the admin's tabs in it."""
    rules = f"#{tabs_id} {{ visibility: visible !important; }}"
    if not admin:
        buttons = ", ".join(f"#{tabs_id} button[role=tab][data-tab-id={tab}]" for tab in ADMIN_TABS)
        rules += f" {buttons} {{ display: none !important; }}"
    return f"<style>{rules}</style>"


def page_for(role_of, tabs_id: str):
    """A demo.load handler for (the tabs `tabs_id`, an HTML block of style rules): an admin's page as built; anyone
    else's opens in the Chat tab with the ADMIN_TABS out of the tab bar. Either way the tabs are then on screen."""
    def show_tabs():
        if role_of(logged_in()) == ADMIN:
            return gr.skip(), open_page_style(tabs_id, admin=True)
        return gr.Tabs(selected="chat"), open_page_style(tabs_id, admin=False)
    return show_tabs


class AdminOnlyFiles:
    """ASGI middleware: files under `folders` (WORKSPACE/exports: rating and model exports) are served to admins only.
    Gradio serves allowed paths to every logged-in user, and an export's name can be guessed."""

    def __init__(self, app, folders, role_of):
        self.app = app
        self.folders = [os.path.realpath(folder) for folder in folders]
        self.role_of = role_of

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            _, marker, target = scope.get("path", "").partition("/file=")
            if marker and self.inside(target) and self.role_of(self.user(scope)) != ADMIN:
                body = json.dumps({"detail": "Exports are for admins: ask an admin of this app for the file."})
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        return await self.app(scope, receive, send)

    def inside(self, target: str) -> bool:
        path = os.path.realpath(urllib.parse.unquote(target))
        return any(path == folder or path.startswith(folder + os.sep) for folder in self.folders)

    @staticmethod
    def user(scope) -> str | None:
        """The login of the request's session cookie, as Gradio's own routes find it."""
        app = scope.get("app")  # the Gradio app: its login tokens and cookie name
        cookie = SimpleCookie()
        for name, value in scope.get("headers") or []:
            if name == b"cookie":
                cookie.load(value.decode("latin-1"))
        cookie_id = getattr(app, "cookie_id", "")
        for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
            if name in cookie:
                return getattr(app, "tokens", {}).get(cookie[name].value)
        return None
