"""The expression language: parsed, never evaluated as Python; its torch and numpy forms and
derivatives, and the autograd walkthrough of grad-demo."""
