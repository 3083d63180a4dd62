package org.kdpose.sample

import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View

/** Draws joints and the sidecar's skeleton edges over the preview. */
class SkeletonView(context: Context, attrs: AttributeSet?) : View(context, attrs) {
    private val joint = Paint().apply { color = Color.YELLOW; style = Paint.Style.FILL; isAntiAlias = true }
    private val limb = Paint().apply { color = Color.CYAN; strokeWidth = 6f; isAntiAlias = true }
    private var points: List<Keypoint> = emptyList()
    private var edges: List<Pair<Int, Int>> = emptyList()
    private var mapX: (Float) -> Float = { it }
    private var mapY: (Float) -> Float = { it }
    var minScore = 0.2f

    /** `toViewX/Y` map model-input pixels to view pixels (the inverse of the crop + scale). */
    fun update(kps: List<Keypoint>, skeleton: List<Pair<Int, Int>>, toViewX: (Float) -> Float, toViewY: (Float) -> Float) {
        points = kps; edges = skeleton; mapX = toViewX; mapY = toViewY
        postInvalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        for ((a, b) in edges) {
            if (a >= points.size || b >= points.size) continue
            val p = points[a]; val q = points[b]
            if (p.score < minScore || q.score < minScore) continue
            canvas.drawLine(mapX(p.x), mapY(p.y), mapX(q.x), mapY(q.y), limb)
        }
        for (p in points) if (p.score >= minScore) canvas.drawCircle(mapX(p.x), mapY(p.y), 8f, joint)
    }
}
