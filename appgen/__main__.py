from appgen.cli import run

run()
