from appgen.cli import main

main()
