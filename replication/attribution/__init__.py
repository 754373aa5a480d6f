"""Attribution engine: every saliency method of the three papers, looked up by name.

    from replication.attribution import attribute, create_method, available_methods
    maps = attribute("gradcam", card, images, targets)            # raw maps, batch first
    method = create_method("smoothgrad", card, n_samples=50)      # configured once
    maps = method.attribute(images, targets)

Raw maps only: post-processing (channel reduction, abs, the papers' visualisations, min–max,
upsampling) is explicit, in ``replication.attribution.postprocess``.
"""

from replication.attribution import postprocess
from replication.attribution._base import (Attribution, Passes, attribute, available_methods,
                                           create_method, method_class, method_label,
                                           method_parameters, register_method)
from replication.attribution._cam import (CAM, AblationCAM, GradCAM, GradCAMPlusPlus,
                                          GuidedGradCAM, HiResCAM, LayerCAM, ScoreCAM, XGradCAM)
from replication.attribution._gradient import (Gradient, GuidedBackprop, InputXGradient,
                                               IntegratedGradients, guided_relus)
from replication.attribution._lrp import LRP
from replication.attribution._parchgrad import ParchGrad, partition_gradient, select_channels
from replication.attribution._sampled_cam import (ExpectedGradCAM, ExpectedGradCAMPlusPlus,
                                                  IntegratedGradCAM, SmoothGradCAMPlusPlus)
from replication.attribution._smoothing import (IntegratedGradientsSmoothGrad, SmoothGrad,
                                                SmoothGradSquared, VarGrad)
from replication.attribution.channel_statistics import ChannelStatistics, LayerStatistics
from replication.attribution.dataset import Explainer, model_device

__all__ = [
    "CAM", "LRP", "AblationCAM", "Attribution", "ChannelStatistics", "Explainer",
    "ExpectedGradCAM", "ExpectedGradCAMPlusPlus", "GradCAM", "GradCAMPlusPlus", "Gradient", "GuidedBackprop",
    "GuidedGradCAM", "HiResCAM", "InputXGradient", "IntegratedGradCAM", "IntegratedGradients",
    "IntegratedGradientsSmoothGrad", "LayerCAM", "LayerStatistics", "ParchGrad", "Passes",
    "ScoreCAM", "SmoothGrad", "SmoothGradCAMPlusPlus", "SmoothGradSquared", "VarGrad",
    "XGradCAM", "attribute", "available_methods", "create_method", "model_device",
    "guided_relus", "method_class", "method_label", "method_parameters", "partition_gradient", "postprocess",
    "register_method", "select_channels",
]
