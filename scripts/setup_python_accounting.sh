#!/usr/bin/env bash
# Make a separate virtualenv with python-accounting (it needs SQLAlchemy 2.1, the ledger pins
# 2.0) for scripts/bench_ledger.py. Usage: scripts/setup_python_accounting.sh [DIR]
# Then: LEDGER_BENCH_PA_PYTHON=DIR/bin/python python scripts/bench_ledger.py
set -euo pipefail
DIR=${1:-.venv-python-accounting}
if ! dpkg -s default-libmysqlclient-dev >/dev/null 2>&1; then
    # python-accounting depends on mysqlclient, which compiles against libmysqlclient.
    apt-get update -qq && apt-get install -y -qq default-libmysqlclient-dev pkg-config >/dev/null
fi
python3 -m venv "$DIR"
"$DIR/bin/pip" install --quiet --upgrade pip
"$DIR/bin/pip" install --quiet 'python-accounting==2.0.0'
echo "$DIR/bin/python"
