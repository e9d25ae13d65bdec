"""Build hook for the compiled Gorilla codec and JSON point scan; all metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pipeline.ts._gorilla",
            sources=["pipeline/ts/_gorilla.c"],
            extra_compile_args=["-O3", "-std=c11"],
        ),
        Extension(
            "pipeline.ts._jsonscan",
            sources=["pipeline/ts/_jsonscan.c"],
            extra_compile_args=["-O3", "-std=c11"],
        ),
    ]
)
