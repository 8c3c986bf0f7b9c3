from __future__ import annotations

import re

from bot.format import LIMIT, esc, plain, split_html


def balanced(part: str) -> bool:
    stack: list[str] = []
    for closing, tag in re.findall(r"<(/?)(b|i|u|s|code|pre)>", part):
        if closing:
            if not stack or stack.pop() != tag:
                return False
        else:
            stack.append(tag)
    return not stack


def test_user_text_is_escaped_for_html_parse_mode():
    assert esc("<b>&co</b>") == "&lt;b&gt;&amp;co&lt;/b&gt;"


def test_a_short_reply_is_one_part():
    assert split_html("<b>ok</b>") == ["<b>ok</b>"]


def test_a_long_reply_splits_on_line_boundaries_and_each_part_is_valid_html():
    lines = [f"line {i:05d} &amp; <i>x</i>" for i in range(1500)]
    text = "<b>log</b>\n<pre>" + "\n".join(lines) + "</pre>"
    parts = split_html(text)
    assert len(parts) > 1
    assert all(len(p) <= LIMIT for p in parts)
    assert all(balanced(p) for p in parts)
    joined = plain("".join(parts))
    for i in (0, 777, 1499):
        assert f"line {i:05d} & x" in joined
    # No line was cut in half: every line is whole in exactly one part.
    assert sum(plain(p).count("line 00777 ") for p in parts) == 1


def test_a_single_huge_line_is_cut_but_never_inside_an_entity():
    text = "&amp;" * 3000
    parts = split_html(text)
    assert all(len(p) <= LIMIT for p in parts)
    assert all(p.count("&") == p.count("&amp;") for p in parts)
    assert "".join(parts) == text
