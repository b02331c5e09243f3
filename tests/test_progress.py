"""The one progress line of the long commands (evaluate, train, enroll --folder, evaluate --liveness)."""

import io

from siamface._progress import Progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_silent_off_a_terminal_unless_lines():
    quiet = io.StringIO()
    with Progress(3, "embedding", stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""
    log = io.StringIO()
    with Progress(2, stream=log, lines=True) as bar:
        bar.to(1, status="s1: +4")
        bar.to(2, status="s2: +3, 1 rejected")
    assert log.getvalue() == "[1/2] s1: +4\n[2/2] s2: +3, 1 rejected\n"


def test_redrawn_in_place_on_a_terminal_and_ended_by_a_newline():
    tty = Tty()
    with Progress(0, stream=tty, interval=0) as bar:
        bar.to(1, 4, "ann")  # the total may be learnt from the first callback
        bar.to(4, 4, "bob")
    out = tty.getvalue()
    assert out.startswith("\r[") and out.count("\r") == 2 and "1/4" in out and "4/4" in out
    assert "bob" in out and out.endswith("\n") and out.count("\n") == 1


def test_show_writes_text_in_place_of_the_bar():
    tty = Tty()
    bar = Progress(0, stream=tty)
    bar.show("epoch 1/2 step 3/9")
    bar.show("epoch 1/2 done", end=True)
    bar.close()  # the line was ended by show: no second newline
    assert tty.getvalue() == "\r" + "epoch 1/2 step 3/9".ljust(100) + "\r" + "epoch 1/2 done".ljust(100) + "\n"
    off = Tty()
    Progress(0, stream=off, enabled=False).show("x", end=True)
    assert off.getvalue() == ""
