"""Natural-language instructions for the Meta-World v3 tasks.

Each task has a few phrasings; the phrasing of an episode is a pure function of
``(task, episode_seed)`` (``seed % number of phrasings``).
"""

from __future__ import annotations

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "assembly-v3": ("put the ring on the peg", "slide the round nut onto the peg"),
    "basketball-v3": ("dunk the ball into the basket", "put the ball in the hoop"),
    "bin-picking-v3": ("move the cube from one bin to the other", "put the cube into the other bin"),
    "box-close-v3": ("put the lid on the box", "close the box with its lid"),
    "button-press-topdown-v3": ("press the button from the top", "push the button down"),
    "button-press-topdown-wall-v3": ("press the button behind the wall from the top", "push the button down"),
    "button-press-v3": ("press the button from the front", "push the button forward"),
    "button-press-wall-v3": ("press the button behind the wall", "reach past the wall and push the button"),
    "coffee-button-v3": ("press the button on the coffee machine", "push the coffee machine button"),
    "coffee-pull-v3": ("pull the mug away from the coffee machine", "slide the mug out of the coffee machine"),
    "coffee-push-v3": ("push the mug under the coffee machine", "slide the mug into the coffee machine"),
    "dial-turn-v3": ("turn the dial", "rotate the dial"),
    "disassemble-v3": ("take the ring off the peg", "lift the round nut off the peg"),
    "door-close-v3": ("close the door", "swing the door shut"),
    "door-lock-v3": ("lock the door", "turn the lock to lock the door"),
    "door-open-v3": ("open the door", "pull the door open"),
    "door-unlock-v3": ("unlock the door", "turn the lock to unlock the door"),
    "drawer-close-v3": ("close the drawer", "push the drawer shut"),
    "drawer-open-v3": ("open the drawer", "pull the drawer out"),
    "faucet-close-v3": ("turn the faucet off", "rotate the faucet handle closed"),
    "faucet-open-v3": ("turn the faucet on", "rotate the faucet handle open"),
    "hammer-v3": ("hammer the nail into the wall", "hit the nail with the hammer"),
    "hand-insert-v3": ("put the puck into the hole", "insert the puck into the hole in the table"),
    "handle-press-side-v3": ("press the handle down from the side", "push the side handle down"),
    "handle-press-v3": ("press the handle down", "push the handle down"),
    "handle-pull-side-v3": ("pull the handle up from the side", "lift the side handle up"),
    "handle-pull-v3": ("pull the handle up", "lift the handle up"),
    "lever-pull-v3": ("pull the lever", "rotate the lever"),
    "peg-insert-side-v3": ("insert the peg into the hole from the side", "push the peg into the side hole"),
    "peg-unplug-side-v3": ("unplug the peg from the side", "pull the peg out of the side hole"),
    "pick-out-of-hole-v3": ("pick the peg out of the hole", "lift the peg out of the hole"),
    "pick-place-v3": ("pick up the puck and place it at the goal", "move the puck to the goal"),
    "pick-place-wall-v3": ("pick up the puck and place it behind the wall", "lift the puck over the wall to the goal"),
    "plate-slide-back-side-v3": ("take the plate out of the cabinet sideways", "slide the plate out sideways"),
    "plate-slide-back-v3": ("take the plate out of the cabinet", "slide the plate out of the cabinet"),
    "plate-slide-side-v3": ("slide the plate sideways into the goal", "push the plate sideways to the goal"),
    "plate-slide-v3": ("slide the plate into the goal", "push the plate into the cabinet"),
    "push-back-v3": ("push the puck back to the goal", "slide the puck backwards to the goal"),
    "push-v3": ("push the puck to the goal", "slide the puck to the goal"),
    "push-wall-v3": ("push the puck around the wall to the goal", "slide the puck past the wall to the goal"),
    "reach-v3": ("reach the goal", "move the gripper to the goal"),
    "reach-wall-v3": ("reach the goal behind the wall", "move the gripper over the wall to the goal"),
    "shelf-place-v3": ("put the block on the shelf", "place the block onto the shelf"),
    "soccer-v3": ("kick the ball into the goal", "push the ball into the net"),
    "stick-pull-v3": ("use the stick to pull the thermos", "grab the stick and pull the thermos with it"),
    "stick-push-v3": ("use the stick to push the thermos", "grab the stick and push the thermos with it"),
    "sweep-into-v3": ("sweep the puck into the hole", "push the puck into the hole"),
    "sweep-v3": ("sweep the puck off the table", "push the puck off the edge of the table"),
    "window-close-v3": ("close the window", "slide the window shut"),
    "window-open-v3": ("open the window", "slide the window open"),
}


def instruction(task: str, episode_seed: int = 0) -> str:
    """The instruction of one episode; raises ``ValueError`` naming the task when it has none."""
    if task not in INSTRUCTIONS:
        raise ValueError(f"no instruction for Meta-World task {task!r}; known tasks: {', '.join(sorted(INSTRUCTIONS))}")
    phrasings = INSTRUCTIONS[task]
    return phrasings[int(episode_seed) % len(phrasings)]
