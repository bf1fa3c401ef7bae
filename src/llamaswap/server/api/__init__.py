"""Operator and compatibility routes: listing, running state, events, logs, activity,
performance, profiles, selectors, peers, the UI, and the Ollama and llama.cpp router APIs."""
