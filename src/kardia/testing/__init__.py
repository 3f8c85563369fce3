"""Test doubles that are named as such: a fake OpenAI-compatible server for fast, fault-injecting tests,
and the scripted roles (user simulator, responder, critic) that answer it."""
