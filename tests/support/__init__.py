"""What the tests share: starting zone processes, a dev HSM token, pushing tensors as a principal."""
