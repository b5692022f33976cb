"""The domain must import with the infrastructure packages unavailable."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_domain_imports_with_ray_sqlalchemy_vllm_blocked() -> None:
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys

        class Block:
            BLOCKED = ("ray", "sqlalchemy", "vllm", "asyncpg", "torch", "alembic")
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.BLOCKED:
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import portrait
        for mod in pkgutil.walk_packages(portrait.__path__, "portrait."):
            importlib.import_module(mod.name)
        leaked = [m for m in sys.modules if m.split(".")[0] in Block.BLOCKED]
        assert not leaked, leaked
        print("imported", len([m for m in sys.modules if m.startswith("portrait")]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "imported" in out.stdout
