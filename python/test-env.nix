# The Python the repository's tests run with (the flake's devShell and its
# python-tests check): the CLI's dependencies, the test tools, and the MCP
# SDK the agent's default server is written against.
python3:
python3.withPackages (
  ps: with ps; [
    plumbum
    pydantic
    platformdirs
    argcomplete
    pytest
    pytest-subprocess
    jsonschema
    mypy
    mcp
    flake8
  ]
)
