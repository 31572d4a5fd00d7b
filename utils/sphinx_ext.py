"""Sphinx extension of the book: the language switch and the "Open in Colab" links under the title of a page.

Every page of both books (English at _build/html/, Chinese at _build/html/zh/, same page paths) gets a
switch to the same page in the other language. Chapter pages get links to the chapter's exercise notebook
and solution sheet in the page's language (zh/exercises/... for the Chinese book), built from the
repository URL and branch in _config.yml (jupyter-book passes them on as html_theme_options).

It also keeps the build away from the reader's progress (HWLLM_NO_PROGRESS=1 for every kernel the
build starts) and, when the site is built from executed copies of the chapters (utils.execute stages
them and sets `hwllm_source_dir`), offers the chapters' own output-free notebooks for download.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from docutils import nodes

COLAB = "https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{path}"


LABELS = {
    "en": {"practise": "Practise in Colab: ", "exercises": "Open the exercise notebook in Colab",
           "solutions": "Open the solution notebook in Colab", "other": "中文", "other_title": "本页的中文版"},
    "zh": {"practise": "在 Colab 中练习：", "exercises": "在 Colab 中打开练习本",
           "solutions": "在 Colab 中打开答案本", "other": "English", "other_title": "This page in English"},
}


def language(app) -> str:
    return "zh" if (app.config.language or "en").lower().startswith("zh") else "en"


def _colab(app, docname: str):
    opts = app.config.html_theme_options or {}
    url = opts.get("repository_url", "").rstrip("/")
    if not url or not docname.startswith("chapters/"):
        return None
    lang = language(app)
    owner_repo = "/".join(url.split("/")[-2:])
    branch = opts.get("repository_branch", "main")
    rel = docname[len("chapters/"):] + ".ipynb"
    prefix = "zh/" if lang == "zh" else ""
    para = nodes.paragraph(classes=["colab-links"])
    para += nodes.Text(LABELS[lang]["practise"])
    for i, folder in enumerate(("exercises", "solutions")):
        if i:
            para += nodes.Text(" · ")
        href = COLAB.format(owner_repo=owner_repo, branch=branch, path=f"{prefix}{folder}/{rel}")
        ref = nodes.reference("", "", refuri=href, classes=["colab-link", f"colab-{folder}"])
        ref += nodes.Text(LABELS[lang][folder])
        para += ref
    return para


def _switch(app, docname: str):
    """A link to the same page in the other language: the Chinese book lives in zh/ beside the English one."""
    lang = language(app)
    up = "../" * docname.count("/")
    href = f"{up}zh/{docname}.html" if lang == "en" else f"{up}../{docname}.html"
    other = "zh" if lang == "en" else "en"
    label = LABELS[lang]
    html = (f'<p class="language-switch"><a href="{href}" hreflang="{other}" lang="{other}" '
            f'title="{label["other_title"]}">{label["other"]}</a></p>')
    return nodes.raw("", html, format="html")


def add_page_links(app, doctree):
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    title = next(iter(section.findall(nodes.title)), None)
    at = section.index(title) + 1 if title is not None else 0
    colab = _colab(app, app.env.docname)
    if colab is not None:
        section.insert(at, colab)
    section.insert(at, _switch(app, app.env.docname))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    """Drop repeated script tags (sphinx-thebe and togglebutton register theirs twice under jupyter-book,
    which makes the browser report "Identifier 'THEBE_JS_URL' has already been declared")."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = (str(getattr(js, "filename", js) or ""), repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def restore_sources(app, exception):
    """The page's download button serves _sources/<page>.ipynb: the chapter as committed (no outputs),
    as when the build executed the chapters itself, not the staged copy carrying the outputs."""
    source_dir = app.config.hwllm_source_dir
    if exception is not None or not source_dir or app.builder.format != "html":
        return
    for docname in app.env.found_docs:
        original = Path(source_dir) / f"{docname}.ipynb"
        copied = Path(app.outdir) / "_sources" / f"{docname}.ipynb"
        if original.is_file() and copied.is_file():
            shutil.copyfile(original, copied)


def setup(app):
    # Kernels are child processes and inherit this: nothing the build runs writes the reader's progress.
    os.environ["HWLLM_NO_PROGRESS"] = "1"
    app.add_config_value("hwllm_source_dir", "", "env")
    app.connect("doctree-read", add_page_links)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("build-finished", restore_sources)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
