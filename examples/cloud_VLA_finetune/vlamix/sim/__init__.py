"""vlamix.sim"""

from vlamix.sim.egl import install_robosuite_import_guard as _install_egl_guard

# spawn-started recording/rollout workers inherit MUJOCO_EGL_DEVICE_ID=0 from a Ray trial; robosuite's
# import-time check would reject it when CUDA_VISIBLE_DEVICES is narrowed (see vlamix.sim.egl).
_install_egl_guard()
